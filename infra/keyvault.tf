locals {
  # Every secret app setting the code reads in Azure -> its Key Vault secret name.
  # Setting names come from shared/settings.py (spec.secret == True); the wiring test checks
  # that none is missing. AzureWebJobsStorage is not here: storage access is identity-based.
  secret_settings = {
    SNOWFLAKE_PRIVATE_KEY     = "snowflake-private-key"
    SNOWFLAKE_PASSWORD        = "snowflake-password"
    SERVICENOW_PASSWORD       = "servicenow-password"
    SERVICENOW_CLIENT_SECRET  = "servicenow-client-secret"
    ALERT_ROUTES              = "alert-routes"
    TEAMS_DEFAULT_WEBHOOK_URL = "teams-default-webhook-url"
    APPROVAL_LOGIC_APP_URL    = "approval-logic-app-url"
    ADO_HOOK_PASSWORD         = "ado-hook-password"
    ADO_HOOK_SECRET           = "ado-hook-secret"
    AZURE_DEVOPS_PAT          = "azure-devops-pat"
    BACKSTAGE_TOKEN           = "backstage-token"
    DYNATRACE_WEBHOOK_SECRET  = "dynatrace-webhook-secret"
    REVIEW_LINK_SECRET        = "review-link-secret"
  }

  # Written by Terraform below (values Azure generates); the others by an operator with
  # `az keyvault secret set` and then listed in var.secrets_in_key_vault.
  # APPLICATIONINSIGHTS_CONNECTION_STRING is not a Key Vault secret: the provider keeps it in
  # site_config (functionapp.tf); with local auth disabled it cannot ingest without the app's token.
  terraform_managed_secret_settings = ["APPROVAL_LOGIC_APP_URL", "REVIEW_LINK_SECRET"]

  # Secrets only the Logic App reads (never an app setting).
  approval_function_key_secret   = "approval-function-key"
  teams_approvals_webhook_secret = "teams-approvals-webhook-url"

  # App settings for secrets: Key Vault references only, never values. A reference to a secret
  # that does not exist yet would reach the code as a literal string, hence the filter.
  key_vault_reference_settings = {
    for setting, secret in local.secret_settings :
    setting => "@Microsoft.KeyVault(SecretUri=${azurerm_key_vault.main.vault_uri}secrets/${secret}/)"
    if contains(concat(local.terraform_managed_secret_settings, var.secrets_in_key_vault), setting)
  }
}

resource "azurerm_key_vault" "main" {
  #checkov:skip=CKV_AZURE_109:No VNet in this deployment: Flex Consumption resolves Key Vault references and the Logic App reads secrets over the public endpoint; access is RBAC-only.
  #checkov:skip=CKV_AZURE_189:Same as CKV_AZURE_109: public endpoint needed without VNet integration.
  #checkov:skip=CKV2_AZURE_32:No VNet/private endpoints in this deployment (see CKV_AZURE_109).
  name                       = local.key_vault_name
  location                   = azurerm_resource_group.main.location
  resource_group_name        = azurerm_resource_group.main.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  rbac_authorization_enabled = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 90
  tags                       = local.tags
}

resource "azurerm_monitor_diagnostic_setting" "key_vault" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_key_vault.main.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category_group = "audit"
  }
}

# The deployer writes the two Terraform-managed secrets below (and, in README, Deploy to Azure, the
# operator secrets). Scoped to this vault only.
resource "azurerm_role_assignment" "deployer_kv_secrets_officer" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

# Role assignments take minutes to reach the data planes: without this wait the first secret
# writes answer 403 and the first start cannot resolve Key Vault references or read its package.
resource "time_sleep" "rbac_propagation" {
  create_duration = "90s"
  depends_on = [
    azurerm_role_assignment.deployer_kv_secrets_officer,
    azurerm_role_assignment.app_kv_secrets_user,
    azurerm_role_assignment.app_storage_blob_owner,
    azurerm_role_assignment.app_storage_queue,
    azurerm_role_assignment.app_storage_table,
  ]
}

# The Logic App HTTP trigger URL carries a SAS signature: a secret for the app, never plain text.
resource "azurerm_key_vault_secret" "approval_logic_app_url" {
  name            = local.secret_settings["APPROVAL_LOGIC_APP_URL"]
  value           = azapi_resource_action.approval_trigger_url.sensitive_output.value
  key_vault_id    = azurerm_key_vault.main.id
  content_type    = "text/uri"
  expiration_date = timeadd(plantimestamp(), "8760h")
  depends_on      = [time_sleep.rbac_propagation]

  lifecycle {
    ignore_changes = [expiration_date]
  }
}

# HMAC key of the signed review links in Teams cards (shared/review): random, never leaves Terraform
# state and Key Vault. Rotating it (terraform apply -replace=random_password.review_link_secret)
# invalidates every review link already sent.
resource "random_password" "review_link_secret" {
  length  = 48
  special = false
}

resource "azurerm_key_vault_secret" "review_link_secret" {
  name            = local.secret_settings["REVIEW_LINK_SECRET"]
  value           = random_password.review_link_secret.result
  key_vault_id    = azurerm_key_vault.main.id
  content_type    = "text/plain"
  expiration_date = timeadd(plantimestamp(), "8760h")
  depends_on      = [time_sleep.rbac_propagation]

  lifecycle {
    ignore_changes = [expiration_date]
  }
}
