# Daily FOCUS export (actual and amortized cost in one dataset) of each target subscription into
# the cost export account. azurerm_subscription_cost_management_export only knows ActualCost,
# AmortizedCost and Usage, so the FocusCost export goes through azapi (Cost Management API
# 2025-03-01). Folder layout: <root>/<export>/<yyyyMMdd-yyyyMMdd>/<runId>/manifest.json + parts.

locals {
  cost_export_name        = "focus-daily"
  cost_export_root_folder = "focus"
}

resource "azapi_resource" "focus_export" {
  for_each  = local.target_subscriptions
  type      = "Microsoft.CostManagement/exports@2025-03-01"
  name      = local.cost_export_name
  parent_id = "/subscriptions/${each.key}"
  # The export writes with its own managed identity: shared keys are off on the account.
  location = var.location

  identity {
    type = "SystemAssigned"
  }

  body = {
    properties = {
      format                = "Csv"
      partitionData         = true
      dataOverwriteBehavior = "OverwritePreviousReport"
      compressionMode       = "None"
      exportDescription     = "ValueFlow daily FOCUS cost export (ingested by cost_export_ingest)"
      definition = {
        type      = "FocusCost"
        timeframe = "MonthToDate"
        dataSet = {
          granularity = "Daily"
          configuration = {
            dataVersion = "1.0r2"
          }
        }
      }
      deliveryInfo = {
        destination = {
          type           = "AzureBlob"
          resourceId     = azurerm_storage_account.cost_exports.id
          container      = local.cost_export_container
          rootFolderPath = local.cost_export_root_folder
        }
      }
      schedule = {
        status     = "Active"
        recurrence = "Daily"
        recurrencePeriod = {
          from = formatdate("YYYY-MM-DD'T'00:00:00Z", timeadd(plantimestamp(), "24h"))
          to   = "2099-12-31T00:00:00Z"
        }
      }
    }
  }

  lifecycle {
    # The start date is only meaningful at creation.
    ignore_changes = [body.properties.schedule.recurrencePeriod.from]
  }

  depends_on = [azurerm_storage_container.cost_exports]
}
