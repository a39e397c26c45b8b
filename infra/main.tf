data "azurerm_client_config" "current" {}

locals {
  # Short, deterministic suffix so globally unique names (storage, vault, app) do not collide.
  suffix   = substr(sha1("${var.subscription_id}/${var.environment_name}"), 0, 6)
  name     = "valueflow-${var.environment_name}"
  sa_base  = substr(replace("vf${var.environment_name}${local.suffix}", "-", ""), 0, 20)
  app_name = "func-${local.name}-${local.suffix}"
  # Key Vault names: 3-24 characters, no "--": at most "kv-" + 11 + "-" + 6 = 21.
  key_vault_name = "kv-${substr(replace(var.environment_name, "-", ""), 0, 11)}-${local.suffix}"

  tags = merge(var.tags, {
    "azd-env-name" = var.environment_name
    "app"          = "valueflow-automations"
  })

  target_subscriptions      = toset([for id in var.target_subscription_ids : lower(id)])
  remediation_subscriptions = toset([for id in var.remediation_subscription_ids : lower(id)])
  action_subscriptions      = toset([for id in var.action_subscription_ids : lower(id)])
}

resource "azurerm_resource_group" "main" {
  name     = "rg-${local.name}"
  location = var.location
  tags     = local.tags
}

# One user-assigned identity for the app: storage, Key Vault references, ARM calls, App Insights.
resource "azurerm_user_assigned_identity" "app" {
  name                = "id-${local.name}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_log_analytics_workspace" "main" {
  name                = "log-${local.name}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = local.tags
}

resource "azurerm_application_insights" "main" {
  name                = "appi-${local.name}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  workspace_id        = azurerm_log_analytics_workspace.main.id
  application_type    = "web"
  # Entra-only ingestion: the app sends with its managed identity (Monitoring Metrics Publisher).
  local_authentication_enabled = false
  tags                         = local.tags
}

# Budget for the app's own resources: the FinOps tool should not become a cost anomaly itself.
resource "azurerm_consumption_budget_resource_group" "app" {
  name              = "budget-${local.name}"
  resource_group_id = azurerm_resource_group.main.id
  amount            = var.budget_amount
  time_grain        = "Monthly"

  time_period {
    start_date = formatdate("YYYY-MM-01'T'00:00:00Z", plantimestamp())
  }

  notification {
    enabled        = true
    threshold      = 80
    operator       = "GreaterThanOrEqualTo"
    threshold_type = "Actual"
    contact_emails = var.budget_alert_emails
  }

  notification {
    enabled        = true
    threshold      = 100
    operator       = "GreaterThanOrEqualTo"
    threshold_type = "Forecasted"
    contact_emails = var.budget_alert_emails
  }

  lifecycle {
    # The start date is fixed at creation; re-planning next month must not recreate the budget.
    ignore_changes = [time_period]
  }
}
