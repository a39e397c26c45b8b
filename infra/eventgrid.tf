# Event Grid -> function delivery: the `AzureFunction` endpoint type
# (function_id = "<function app id>/functions/<name>") instead of the webhook URL
# `https://<app>.azurewebsites.net/runtime/webhooks/eventgrid?functionName=<name>&code=<key>`.
# Event Grid then authenticates to the app through ARM, so no eventgrid_extension system key is
# read into Terraform state or stored anywhere, and rotating host keys cannot break delivery.
# Cost: Event Grid checks that the function exists when the subscription is created, hence
# var.event_subscriptions_enabled for the first deployment (README, Deploy to Azure).

locals {
  function_app_id = azurerm_function_app_flex_consumption.app.id

  # Policy states that carry a decision for the app: remediate/escalate (NonCompliant) or close
  # (Compliant). Unknown/Conflicting/Error states would only be noise for the worker.
  policy_compliance_states = ["NonCompliant", "Compliant"]

  # Dead letters of every subscription land in the app storage account.
  dead_letter_container = "eventgrid-deadletter"

  # Event Grid retries for up to 24 h (DESIGN.md); after that the event is dead-lettered.
  event_retry = {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
}

# ---------------------------------------------------------------------------------------------
# Cost exports: BlobCreated of manifest.json on the cost export account -> cost_export_ingest
# ---------------------------------------------------------------------------------------------

resource "azurerm_eventgrid_system_topic" "cost_exports" {
  name                = "evgt-${local.name}-cost-exports"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  source_resource_id  = azurerm_storage_account.cost_exports.id
  topic_type          = "Microsoft.Storage.StorageAccounts"
  tags                = local.tags

  # Dead-lettering writes to the app storage account with this identity (no key).
  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_eventgrid_system_topic_event_subscription" "cost_export_manifest" {
  count               = var.event_subscriptions_enabled ? 1 : 0
  name                = "cost-export-ingest"
  system_topic        = azurerm_eventgrid_system_topic.cost_exports.name
  resource_group_name = azurerm_resource_group.main.name

  azure_function_endpoint {
    function_id = "${local.function_app_id}/functions/cost_export_ingest"
    # One manifest per delivery: ingestion of a run may take most of the 30 s budget.
    max_events_per_batch = 1
  }

  included_event_types = ["Microsoft.Storage.BlobCreated"]

  # Only the manifest of a finished export run (written last), never the partitions.
  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${local.cost_export_container}/"
    subject_ends_with   = "/manifest.json"
    case_sensitive      = false
  }

  retry_policy {
    max_delivery_attempts = local.event_retry.max_delivery_attempts
    event_time_to_live    = local.event_retry.event_time_to_live
  }

  dead_letter_identity {
    type = "SystemAssigned"
  }

  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.app.id
    storage_blob_container_name = local.dead_letter_container
  }

  depends_on = [azurerm_role_assignment.cost_topic_dead_letter]
}

resource "azurerm_eventgrid_system_topic_event_subscription" "cost_export_success_marker" {
  count               = var.event_subscriptions_enabled ? 1 : 0
  name                = "cost-export-ingest-marker"
  system_topic        = azurerm_eventgrid_system_topic.cost_exports.name
  resource_group_name = azurerm_resource_group.main.name

  azure_function_endpoint {
    function_id = "${local.function_app_id}/functions/cost_export_ingest"
    # One marker per delivery, like the manifests.
    max_events_per_batch = 1
  }

  included_event_types = ["Microsoft.Storage.BlobCreated"]

  # Manifest-less FOCUS folders (AWS, Google Cloud, Oracle): the _SUCCESS marker written after the last part.
  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${local.cost_export_container}/"
    subject_ends_with   = "/_SUCCESS"
    case_sensitive      = false
  }

  retry_policy {
    max_delivery_attempts = local.event_retry.max_delivery_attempts
    event_time_to_live    = local.event_retry.event_time_to_live
  }

  dead_letter_identity {
    type = "SystemAssigned"
  }

  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.app.id
    storage_blob_container_name = local.dead_letter_container
  }

  depends_on = [azurerm_role_assignment.cost_topic_dead_letter]
}

# ---------------------------------------------------------------------------------------------
# Azure Policy state changes of each target subscription -> policy_events
#
# A system topic must live in the subscription of its source, and azurerm resources are bound to
# the provider's subscription; azapi takes a full parent id, so one for_each covers every target
# subscription without a provider alias per subscription. Only one PolicyStates system topic may
# exist per subscription: import an existing one (README, Deploy to Azure).
# ---------------------------------------------------------------------------------------------

resource "azapi_resource" "policy_events_rg" {
  for_each  = local.target_subscriptions
  type      = "Microsoft.Resources/resourceGroups@2024-03-01"
  name      = "rg-${local.name}-policy-events"
  parent_id = "/subscriptions/${each.key}"
  location  = var.location
  tags      = local.tags
}

resource "azapi_resource" "policy_topic" {
  for_each  = local.target_subscriptions
  type      = "Microsoft.EventGrid/systemTopics@2025-02-15"
  name      = "evgt-${local.name}-policy-states"
  parent_id = azapi_resource.policy_events_rg[each.key].id
  location  = "global"
  tags      = local.tags

  identity {
    type = "SystemAssigned"
  }

  body = {
    properties = {
      source    = "/subscriptions/${each.key}"
      topicType = "Microsoft.PolicyInsights.PolicyStates"
    }
  }
}

resource "azapi_resource" "policy_event_subscription" {
  for_each  = var.event_subscriptions_enabled ? local.target_subscriptions : toset([])
  type      = "Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15"
  name      = "policy-events"
  parent_id = azapi_resource.policy_topic[each.key].id

  body = {
    properties = {
      eventDeliverySchema = "EventGridSchema"
      destination = {
        endpointType = "AzureFunction"
        properties = {
          resourceId        = "${local.function_app_id}/functions/policy_events"
          maxEventsPerBatch = 10
        }
      }
      filter = {
        includedEventTypes = [
          "Microsoft.PolicyInsights.PolicyStateCreated",
          "Microsoft.PolicyInsights.PolicyStateChanged",
          "Microsoft.PolicyInsights.PolicyStateDeleted",
        ]
        advancedFilters = [
          {
            operatorType = "StringIn"
            key          = "data.complianceState"
            values       = local.policy_compliance_states
          },
        ]
      }
      retryPolicy = {
        maxDeliveryAttempts      = local.event_retry.max_delivery_attempts
        eventTimeToLiveInMinutes = local.event_retry.event_time_to_live
      }
      deadLetterWithResourceIdentity = {
        identity = {
          type = "SystemAssigned"
        }
        deadLetterDestination = {
          endpointType = "StorageBlob"
          properties = {
            resourceId        = azurerm_storage_account.app.id
            blobContainerName = local.dead_letter_container
          }
        }
      }
    }
  }

  depends_on = [azurerm_role_assignment.policy_topic_dead_letter]
}
