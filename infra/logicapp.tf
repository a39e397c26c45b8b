# Approval Logic App (Consumption). The workflow definition is the file
# logicapp/approval-workflow.json, deployed as one unit through azapi: azurerm_logic_app_workflow
# only manages an empty shell whose actions are separate resources, which cannot express a
# definition file (and runAfter references would race between those resources).
#
# The workflow calls the HTTP functions with a function key it reads from Key Vault at run time
# (secure inputs/outputs, never in the definition or in Terraform state) and posts to the Teams
# approvals channel through a Workflows webhook URL also read from Key Vault.

locals {
  approval_workflow_definition = jsondecode(file("${path.module}/logicapp/approval-workflow.json"))
}

resource "azapi_resource" "approval_workflow" {
  type      = "Microsoft.Logic/workflows@2019-05-01"
  name      = "logic-${local.name}-approvals"
  parent_id = azurerm_resource_group.main.id
  location  = azurerm_resource_group.main.location
  tags      = local.tags

  # Own identity, separate from the app's: it may read two secrets and nothing else.
  identity {
    type = "SystemAssigned"
  }

  body = {
    properties = {
      state      = "Enabled"
      definition = local.approval_workflow_definition
      parameters = {
        functionAppBaseUrl     = { value = "https://${azurerm_function_app_flex_consumption.app.default_hostname}" }
        keyVaultUri            = { value = azurerm_key_vault.main.vault_uri }
        functionKeySecretName  = { value = local.approval_function_key_secret }
        teamsWebhookSecretName = { value = local.teams_approvals_webhook_secret }
      }
    }
  }
}

# Callback URL of the `manual` trigger (has a SAS signature): straight into Key Vault, where the
# app reads it as APPROVAL_LOGIC_APP_URL through a Key Vault reference.
resource "azapi_resource_action" "approval_trigger_url" {
  type        = "Microsoft.Logic/workflows/triggers@2019-05-01"
  resource_id = "${azapi_resource.approval_workflow.id}/triggers/manual"
  action      = "listCallbackUrl"
  method      = "POST"

  sensitive_response_export_values = ["value"]
}

# Placeholders the operator overwrites (README, Deploy to Azure); they exist so the Logic App's role
# assignments can be scoped to exactly these two secrets. Terraform never reads the real values.
resource "azurerm_key_vault_secret" "logic_app_placeholder" {
  for_each = toset([local.approval_function_key_secret, local.teams_approvals_webhook_secret])

  name            = each.value
  value           = "set-with-az-keyvault-secret-set"
  key_vault_id    = azurerm_key_vault.main.id
  content_type    = "text/plain"
  expiration_date = timeadd(plantimestamp(), "8760h")
  depends_on      = [time_sleep.rbac_propagation]

  lifecycle {
    ignore_changes = [value, expiration_date, content_type, tags]
  }
}

resource "azurerm_monitor_diagnostic_setting" "approval_workflow" {
  name                       = "to-log-analytics"
  target_resource_id         = azapi_resource.approval_workflow.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "WorkflowRuntime"
  }
}
