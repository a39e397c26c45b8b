resource "azurerm_service_plan" "main" {
  #checkov:skip=CKV_AZURE_212:Flex Consumption (FC1) scales per function; a minimum instance count does not apply.
  #checkov:skip=CKV_AZURE_225:Flex Consumption (FC1) has no zone-redundancy setting on the plan.
  name                = "asp-${local.name}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  os_type             = "Linux"
  sku_name            = "FC1"
  tags                = local.tags
}

locals {
  # Every non-secret app setting the code reads in Azure (names from shared/settings.py).
  # Lists are comma-separated, as the settings module parses them.
  plain_app_settings = {
    # Identity-based host storage (no connection string, no key).
    "AzureWebJobsStorage__accountName" = azurerm_storage_account.app.name
    "AzureWebJobsStorage__credential"  = "managedidentity"
    "AzureWebJobsStorage__clientId"    = azurerm_user_assigned_identity.app.client_id

    # DefaultAzureCredential picks the user-assigned identity (ARM, Storage and Table SDKs).
    "AZURE_CLIENT_ID" = azurerm_user_assigned_identity.app.client_id
    # Host telemetry to App Insights with Entra auth (local auth is disabled on the component).
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING" = "ClientId=${azurerm_user_assigned_identity.app.client_id};Authorization=AAD"

    "WAREHOUSE"           = "snowflake"
    "SNOWFLAKE_ACCOUNT"   = var.snowflake.account
    "SNOWFLAKE_USER"      = var.snowflake.user
    "SNOWFLAKE_ROLE"      = var.snowflake.role
    "SNOWFLAKE_WAREHOUSE" = var.snowflake.warehouse
    "SNOWFLAKE_DATABASE"  = var.snowflake.database
    "SNOWFLAKE_SCHEMA"    = var.snowflake.schema

    "SERVICENOW_INSTANCE_URL" = var.servicenow.instance_url
    "SERVICENOW_USERNAME"     = var.servicenow.username
    "SERVICENOW_CLIENT_ID"    = var.servicenow.client_id
    "SERVICENOW_RESOLVE_MODE" = "resolve"
    "SERVICENOW_CLOSE_CODE"   = "Resolved by caller"

    "TEAMS_WEBHOOK_ALLOWED_HOSTS" = join(",", var.teams_webhook_allowed_hosts)
    "OWNER_TAG_KEYS"              = join(",", var.owner_tag_keys)

    # Alert delivery (shared/alerts): storm control and retries; the code defaults are the production values.
    "ALERT_STORM_THRESHOLD"      = "10"
    "ALERT_STORM_WINDOW_MINUTES" = "10"
    "ALERT_MAX_ATTEMPTS"         = "5"
    "ALERT_RETRY_BASE_SECONDS"   = "5"
    "ALERT_RETRY_MAX_SECONDS"    = "300"
    "ALERT_HTTP_TIMEOUT_SECONDS" = "10"

    "COST_CRITICAL_USD_PER_HOUR"  = tostring(var.cost_critical_usd_per_hour)
    "COST_MIN_IMPACT_USD_PER_DAY" = tostring(var.cost_min_impact_usd_per_day)
    "COST_SCAN_SCHEDULE"          = var.cost_scan_schedule
    # exports are read with the managed identity (Storage Blob Data Reader on the cost-exports container)
    "COST_EXPORT_STORAGE__accountName" = azurerm_storage_account.cost_exports.name
    "COST_CENTER_TAG_KEYS"             = join(",", var.cost_center_tag_keys)
    "ENVIRONMENT_TAG_KEYS"             = join(",", var.environment_tag_keys)
    "COST_FEEDBACK_SUPPRESS_DAYS"      = tostring(var.cost_feedback_suppress_days)
    "COST_PARTITION_SIZE"              = tostring(var.cost_partition_size)
    "COST_QUERY_SCOPES"                = join(",", var.cost_query_scopes)
    "COST_THRESHOLD_CURRENCY"          = var.cost_threshold_currency
    "COST_CURRENCY_RATES"              = join(",", [for code, rate in var.cost_currency_rates : "${code}=${rate}"])

    "REMEDIATION_MODE"                = var.remediation_mode
    "REMEDIATION_ALLOWED_ASSIGNMENTS" = join(",", var.remediation_allowed_assignments)
    "REMEDIATION_DENIED_ASSIGNMENTS"  = join(",", var.remediation_denied_assignments)
    "REMEDIATION_WATCH_SCHEDULE"      = var.remediation_watch_schedule
    # Remediation task shape and pace (shared/policy); the code defaults are the production values.
    "REMEDIATION_WINDOW_SECONDS"       = "300"
    "REMEDIATION_MAX_CONCURRENT_TASKS" = "100"
    "REMEDIATION_RESOURCE_COUNT"       = "500"
    "REMEDIATION_PARALLEL_DEPLOYMENTS" = "10"
    "REMEDIATION_FAILURE_THRESHOLD"    = "0.1"
    "POLICY_INCIDENT_ASSIGNMENTS"      = join(",", var.policy_incident_assignments)
    "ARM_WRITES_PER_SECOND"            = "10"
    "ARM_ENDPOINT"                     = "https://management.azure.com"

    "CALLBACK_ALLOWED_HOSTS"          = join(",", var.callback_allowed_hosts)
    "ACTIONS_PROTECTED_SUBSCRIPTIONS" = join(",", var.actions_protected_subscriptions)
    "ACTIONS_PROTECTED_TAG"           = var.actions_protected_tag

    "VALUEFLOW_LOG_FORMAT" = "json"
  }
}

resource "azurerm_function_app_flex_consumption" "app" {
  name                = local.app_name
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  service_plan_id     = azurerm_service_plan.main.id

  runtime_name           = "python"
  runtime_version        = "3.11"
  maximum_instance_count = var.maximum_instance_count
  instance_memory_in_mb  = 2048

  # Deployment package pulled with the managed identity (no storage key).
  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.app.primary_blob_endpoint}${azurerm_storage_container.app[local.deployment_container].name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.app.id

  https_only                                     = true
  webdeploy_publish_basic_authentication_enabled = false
  key_vault_reference_identity_id                = azurerm_user_assigned_identity.app.id

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  site_config {
    minimum_tls_version     = "1.2"
    scm_minimum_tls_version = "1.2"
    http2_enabled           = true
    # FTP: Flex Consumption exposes no FTP(S) endpoint, and basic-auth publishing is off above.
  }

  # Secrets are Key Vault references only (keyvault.tf); everything else is plain.
  app_settings = merge(local.plain_app_settings, local.key_vault_reference_settings)

  tags = merge(local.tags, { "azd-service-name" = "api" })

  # The identity must be able to read the package and the secrets before the first start.
  depends_on = [
    azurerm_role_assignment.app_storage_blob_owner,
    azurerm_role_assignment.app_kv_secrets_user,
  ]
}
