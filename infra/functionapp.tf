resource "azurerm_service_plan" "main" {
  #checkov:skip=CKV_AZURE_212:Flex Consumption (FC1) scales per function; a minimum instance count does not apply.
  #checkov:skip=CKV_AZURE_225:Zone redundancy (zone_balancing_enabled) is supported on Flex Consumption but left off for cost: it needs always-ready instances in several zones; turn it on for production-critical use.
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
    # Identity-based host storage (no connection string, no key); the endpoints come from the
    # account, so sovereign clouds work too. The code reads the same settings (storage_connection.py).
    "AzureWebJobsStorage__accountName"     = azurerm_storage_account.app.name
    "AzureWebJobsStorage__blobServiceUri"  = trimsuffix(azurerm_storage_account.app.primary_blob_endpoint, "/")
    "AzureWebJobsStorage__queueServiceUri" = trimsuffix(azurerm_storage_account.app.primary_queue_endpoint, "/")
    "AzureWebJobsStorage__tableServiceUri" = trimsuffix(azurerm_storage_account.app.primary_table_endpoint, "/")
    "AzureWebJobsStorage__credential"      = "managedidentity"
    "AzureWebJobsStorage__clientId"        = azurerm_user_assigned_identity.app.client_id
    # alerts of a channel that is not configured land here (never a local folder in Azure)
    "OUTBOX_CONTAINER" = "alerts-outbox"

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

    "AZURE_DEVOPS_ORG_URL" = var.azure_devops.org_url
    "AZURE_DEVOPS_PROJECT" = var.azure_devops.project
    "ADO_HOOK_USERNAME"    = var.azure_devops.hook_username
    "BACKSTAGE_URL"        = var.backstage_url

    # Demand sync (shared/demands): ServiceNow demands <-> Azure Boards; the code defaults are the production values.
    "AZURE_DEVOPS_WORK_ITEM_TYPE"            = "Feature"
    "AZURE_DEVOPS_ACCEPTANCE_CRITERIA_FIELD" = "Microsoft.VSTS.Common.AcceptanceCriteria"
    "SERVICENOW_DEMAND_TABLE"                = "dmn_demand"
    "SERVICENOW_DEMAND_WORK_ITEM_FIELD"      = "u_azure_devops_work_item"
    "SERVICENOW_DEMAND_WORK_ITEM_URL_FIELD"  = "u_azure_devops_url"
    "SERVICENOW_DEMAND_APPROVED_QUERY"       = "approval=approved"
    "DEMANDS_STATE_MAP"                      = "Doing=In progress,Active=In progress,Done=Completed,Closed=Completed"
    "DEMANDS_RECONCILE_SCHEDULE"             = "0 15 2 * * *"
    "HOUSEKEEPING_SCHEDULE"                  = "0 45 3 * * *"
    "DEMANDS_RECONCILE_LOOKBACK_DAYS"        = "30"
    "DEMANDS_MAX_ATTEMPTS"                   = "8"
    "DEMANDS_RETRY_BASE_SECONDS"             = "10"
    "DEMANDS_RETRY_MAX_SECONDS"              = "1800"
    # DORA metrics (shared/dora): what counts as production, the problem priority rule, identity, digest.
    "DORA_PRODUCTION_ENVIRONMENTS" = join(",", var.dora.production_environments)
    "DORA_PRIORITY_RULES"          = var.dora.priority_rules
    "DORA_SERVICE_MAP"             = var.dora.service_map
    "DORA_COMPONENT_TAG"           = var.dora.component_tag
    "DORA_DIGEST_SCHEDULE"         = var.dora.digest_schedule

    "TEAMS_WEBHOOK_ALLOWED_HOSTS" = join(",", var.teams_webhook_allowed_hosts)
    "OWNER_TAG_KEYS"              = join(",", var.owner_tag_keys)

    # Alert delivery (shared/alerts): storm control and retries; the code defaults are the production values.
    "ALERT_STORM_THRESHOLD"      = "10"
    "ALERT_STORM_WINDOW_MINUTES" = "10"
    "ALERT_MAX_ATTEMPTS"         = "5"
    "ALERT_RETRY_BASE_SECONDS"   = "5"
    "ALERT_RETRY_MAX_SECONDS"    = "300"
    "ALERT_HTTP_TIMEOUT_SECONDS" = "10"
    "TEAMS_RATE_SCOPE"           = "storage"

    "COST_CRITICAL_USD_PER_HOUR"  = tostring(var.cost_critical_usd_per_hour)
    "COST_MIN_IMPACT_USD_PER_DAY" = tostring(var.cost_min_impact_usd_per_day)
    "COST_SCAN_SCHEDULE"          = var.cost_scan_schedule
    # exports are read with the managed identity (Storage Blob Data Reader on the cost-exports container)
    "COST_EXPORT_STORAGE__accountName"    = azurerm_storage_account.cost_exports.name
    "COST_EXPORT_STORAGE__blobServiceUri" = trimsuffix(azurerm_storage_account.cost_exports.primary_blob_endpoint, "/")
    "COST_EXPORT_STORAGE__credential"     = "managedidentity"
    "COST_EXPORT_STORAGE__clientId"       = azurerm_user_assigned_identity.app.client_id
    "COST_CENTER_TAG_KEYS"                = join(",", var.cost_center_tag_keys)
    "ENVIRONMENT_TAG_KEYS"                = join(",", var.environment_tag_keys)
    "COST_FEEDBACK_SUPPRESS_DAYS"         = tostring(var.cost_feedback_suppress_days)
    "COST_PARTITION_SIZE"                 = tostring(var.cost_partition_size)
    "COST_QUERY_SCOPES"                   = join(",", var.cost_query_scopes)
    "COST_THRESHOLD_CURRENCY"             = var.cost_threshold_currency
    "COST_CURRENCY_RATES"                 = join(",", [for code, rate in var.cost_currency_rates : "${code}=${rate}"])

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
  # No key_vault_reference_identity_id on this resource (not in azurerm 5.10): app_kv_identity below.

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  site_config {
    minimum_tls_version     = "1.2"
    scm_minimum_tls_version = "1.2"
    http2_enabled           = true
    # FTP: Flex Consumption exposes no FTP(S) endpoint, and basic-auth publishing is off above.
    # Here, not in app_settings: the provider moves it here on read (a diff on every plan otherwise).
    application_insights_connection_string = azurerm_application_insights.main.connection_string
  }

  # Written at creation only; the final settings are app_settings below (azapi), because the
  # provider always adds an AzureWebJobsStorage connection string with an empty account key on
  # Flex apps (upstream issues 29693, 29149), which the host prefers over
  # AzureWebJobsStorage__accountName: queue triggers would fail.
  app_settings = local.final_app_settings

  tags = merge(local.tags, { "azd-service-name" = "api" })

  lifecycle {
    ignore_changes = [app_settings]
  }

  # The identity must be able to read the package and the secrets before the first start.
  depends_on = [time_sleep.rbac_propagation]
}

locals {
  # Every app setting of the app, exactly: plain ones, Key Vault references, the telemetry
  # connection string the host reads (also in site_config), and no AzureWebJobsStorage.
  final_app_settings = merge(
    local.plain_app_settings,
    local.key_vault_reference_settings,
    { "APPLICATIONINSIGHTS_CONNECTION_STRING" = azurerm_application_insights.main.connection_string },
  )
}

# Key Vault references resolve with the app's user-assigned identity (the system identity this
# app does not have otherwise): properties.keyVaultReferenceIdentity, which azurerm cannot set.
resource "azapi_resource_action" "app_kv_identity" {
  type        = "Microsoft.Web/sites@2024-11-01"
  resource_id = azurerm_function_app_flex_consumption.app.id
  method      = "PATCH"
  body = {
    properties = {
      keyVaultReferenceIdentity = azurerm_user_assigned_identity.app.id
    }
  }

  lifecycle {
    replace_triggered_by = [azurerm_function_app_flex_consumption.app]
  }
}

# The final app settings, replacing the whole set (PUT): this removes the provider's
# AzureWebJobsStorage. Re-applied whenever the app resource changes (the provider writes it back).
resource "azapi_resource_action" "app_settings" {
  type        = "Microsoft.Web/sites@2024-11-01"
  resource_id = azurerm_function_app_flex_consumption.app.id
  action      = "config/appsettings"
  method      = "PUT"
  body = {
    properties = local.final_app_settings
  }

  lifecycle {
    replace_triggered_by = [azurerm_function_app_flex_consumption.app]
  }

  # References must resolve on the first start: the identity is set and the secrets exist.
  depends_on = [
    azapi_resource_action.app_kv_identity,
    azurerm_key_vault_secret.approval_logic_app_url,
    azurerm_key_vault_secret.review_link_secret,
  ]
}

# A Key Vault reference is read at start (and refreshed within 24 h): restart once a secret the
# app reads was written or rotated after the app started, so it never runs on a stale value.
resource "terraform_data" "late_secrets" {
  input = {
    approval_logic_app_url = azurerm_key_vault_secret.approval_logic_app_url.version
    review_link_secret     = azurerm_key_vault_secret.review_link_secret.version
    settings               = sha1(jsonencode(local.final_app_settings))
  }
}

resource "azapi_resource_action" "app_restart" {
  type        = "Microsoft.Web/sites@2024-11-01"
  resource_id = azurerm_function_app_flex_consumption.app.id
  action      = "restart"
  method      = "POST"

  lifecycle {
    replace_triggered_by = [terraform_data.late_secrets]
  }

  depends_on = [azapi_resource_action.app_settings]
}
