locals {
  # Names the code uses (shared/ adapters and function bindings); the wiring test checks them.
  app_queues = ["alerts", "policy-work", "cost-ingest", "cost-partitions", "approval-actions", "ado-events", "demands", "dora-events"]
  app_tables = ["idempotency", "episodes", "policystate", "remediations", "approvals", "audit", "killswitches", "alertstorms", "demands", "teamsbudget"]
  # alerts-outbox: alerts of a channel that is not configured (OUTBOX_CONTAINER), never delivered
  app_containers = ["reports", "eventgrid-deadletter", "alerts-outbox", "ado-events", "dora-events"]

  # Queue triggers move a message to <queue>-poison after maxDequeueCount (host.json); create them
  # up front so `alerts replay-poison` and alerts on poison depth work from day one.
  all_queues = concat(local.app_queues, [for q in local.app_queues : "${q}-poison"])

  # Flex Consumption deployment package container.
  deployment_container = "app-package"
  # Cost Management exports land here; manifest.json of each run triggers cost_export_ingest.
  cost_export_container = "cost-exports"
}

resource "azurerm_storage_account" "app" {
  #checkov:skip=CKV_AZURE_59:No VNet in this deployment: Flex Consumption reaches storage over its public endpoint; access is Entra-only (shared keys off).
  #checkov:skip=CKV2_AZURE_33:No VNet/private endpoints in this deployment (see CKV_AZURE_59); add them together with VNet integration.
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys are enough for operational state (idempotency keys, episodes); no regulated data here.
  #checkov:skip=CKV_AZURE_206:Operational state is rebuildable; ZRS covers zone failure, GRS is not worth the cost here.
  #checkov:skip=CKV_AZURE_33:Queue logging is azurerm_storage_account_queue_properties.app below (azurerm 5 removed queue_properties from the account; this check only looks inside it).
  name                            = "${local.sa_base}app"
  location                        = azurerm_resource_group.main.location
  resource_group_name             = azurerm_resource_group.main.name
  account_tier                    = "Standard"
  account_replication_type        = "ZRS"
  account_kind                    = "StorageV2"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  # Identity-based AzureWebJobsStorage: the host and the code use the managed identity only.
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  local_user_enabled              = false
  tags                            = local.tags

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  sas_policy {
    expiration_period = "01.00:00:00"
  }
}

# Queue logging (azurerm 5 moved it out of the account into its own resource).
resource "azurerm_storage_account_queue_properties" "app" {
  storage_account_id = azurerm_storage_account.app.id

  logging {
    delete                = true
    read                  = true
    write                 = true
    version               = "1.0"
    retention_policy_days = 10
  }
}

resource "azurerm_storage_queue" "app" {
  for_each           = toset(local.all_queues)
  name               = each.value
  storage_account_id = azurerm_storage_account.app.id
}

resource "azurerm_storage_table" "app" {
  #checkov:skip=CKV2_AZURE_20:Read requests are logged by the StorageRead diagnostic setting (azurerm_monitor_diagnostic_setting.storage); the legacy storage insights this check wants needs an account key, and keys are disabled.
  for_each           = toset(local.app_tables)
  name               = each.value
  storage_account_id = azurerm_storage_account.app.id
}

resource "azurerm_storage_container" "app" {
  #checkov:skip=CKV2_AZURE_21:Read requests are logged by the StorageRead diagnostic setting (azurerm_monitor_diagnostic_setting.storage); the legacy storage insights this check wants needs an account key, and keys are disabled.
  for_each              = toset(concat(local.app_containers, [local.deployment_container]))
  name                  = each.value
  storage_account_id    = azurerm_storage_account.app.id
  container_access_type = "private"
}

# Cost Management writes exports here from every target subscription. A separate account keeps
# the Event Grid BlobCreated topic quiet (only export files) and lets finance read it alone.
resource "azurerm_storage_account" "cost_exports" {
  #checkov:skip=CKV_AZURE_59:Cost Management exports and the Event Grid system topic reach the account over its public endpoint; access is Entra-only (shared keys off).
  #checkov:skip=CKV2_AZURE_33:No VNet/private endpoints in this deployment (see CKV_AZURE_59).
  #checkov:skip=CKV2_AZURE_1:Cost exports hold billing data already visible to Cost Management Readers; Microsoft-managed keys are enough.
  #checkov:skip=CKV_AZURE_206:Exports are re-runnable from Cost Management; ZRS is enough.
  #checkov:skip=CKV_AZURE_33:No queues are used on this account.
  name                            = "${local.sa_base}cost"
  location                        = azurerm_resource_group.main.location
  resource_group_name             = azurerm_resource_group.main.name
  account_tier                    = "Standard"
  account_replication_type        = "ZRS"
  account_kind                    = "StorageV2"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true
  local_user_enabled              = false
  tags                            = local.tags

  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }

  sas_policy {
    expiration_period = "01.00:00:00"
  }
}

resource "azurerm_storage_container" "cost_exports" {
  #checkov:skip=CKV2_AZURE_21:Read requests are logged by the StorageRead diagnostic setting (azurerm_monitor_diagnostic_setting.storage); the legacy storage insights this check wants needs an account key, and keys are disabled.
  name                  = local.cost_export_container
  storage_account_id    = azurerm_storage_account.cost_exports.id
  container_access_type = "private"
}

# Blob, queue and table logs of both accounts go to Log Analytics.
resource "azurerm_monitor_diagnostic_setting" "storage" {
  for_each = {
    "app-blob"  = "${azurerm_storage_account.app.id}/blobServices/default"
    "app-queue" = "${azurerm_storage_account.app.id}/queueServices/default"
    "app-table" = "${azurerm_storage_account.app.id}/tableServices/default"
    "cost-blob" = "${azurerm_storage_account.cost_exports.id}/blobServices/default"
  }
  name                       = "to-log-analytics"
  target_resource_id         = each.value
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}
