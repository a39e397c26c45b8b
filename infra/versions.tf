terraform {
  # 1.9+: variable validations may refer to other variables (subset checks below).
  required_version = ">= 1.9.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 5.x is the current major; tests/infra/test_provider_schema.py checks every resource,
      # argument and block against the 5.10 schema (cdktn-provider-azurerm 18.9.0).
      version = "~> 5.10"
    }
    azapi = {
      # Only for what azurerm cannot express: FOCUS exports, the Logic App definition file,
      # resources in the other target subscriptions (eventgrid.tf), and the Flex app's Key Vault
      # reference identity and final app settings (functionapp.tf). 2.4+ bundles the schemas of
      # exports@2025-03-01 and systemTopics@2025-02-15.
      source  = "Azure/azapi"
      version = "~> 2.4"
    }
    random = {
      # The review-link HMAC key (keyvault.tf).
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
    time = {
      # Wait for role assignments to propagate before the first secret writes and app start.
      source  = "hashicorp/time"
      version = "~> 0.13"
    }
  }
}
