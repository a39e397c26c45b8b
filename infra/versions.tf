terraform {
  # 1.9+: variable validations may refer to other variables (subset checks below).
  required_version = ">= 1.9.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.40+: azurerm_function_app_flex_consumption and storage_account_id on queues/tables.
      version = "~> 4.40"
    }
    azapi = {
      # Only for what azurerm v4 cannot express: FOCUS exports, the Logic App definition file,
      # and resources that live in the other target subscriptions (see eventgrid.tf).
      source  = "Azure/azapi"
      version = "~> 2.2"
    }
  }
}
