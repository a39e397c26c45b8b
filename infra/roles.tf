# Least-privilege role assignments. Every scope is a subscription, a resource group or a single
# resource: never a management group (the wiring test enforces it).

locals {
  app_principal_id = azurerm_user_assigned_identity.app.principal_id

  # Exactly the ARM actions the approved cost actions need (issue 6); reads come from Reader.
  cost_action_permissions = [
    "Microsoft.Compute/virtualMachines/deallocate/action",
    "Microsoft.ContainerService/managedClusters/agentPools/write",
    "Microsoft.Consumption/budgets/write",
    "Microsoft.Web/sites/stop/action",
  ]

  # What shared/policy calls on ARM: create remediation tasks, read them and their deployments.
  policy_remediation_permissions = [
    "Microsoft.PolicyInsights/remediations/write",
    "Microsoft.PolicyInsights/remediations/read",
    "Microsoft.PolicyInsights/remediations/listDeployments/read",
  ]

  cost_query_extra_scopes = toset([
    for scope in var.cost_query_scopes : lower(scope)
    if !contains([for id in local.target_subscriptions : "/subscriptions/${id}"], lower(scope))
  ])
}

# ---------------------------------------------------------------------------------------------
# The app's identity on its own resources
# ---------------------------------------------------------------------------------------------

# The Functions host keeps leases, timers' schedule status and the deployment package in blobs,
# and the code writes reports; Owner (not Contributor) is what identity-based AzureWebJobsStorage
# documents for the host.
resource "azurerm_role_assignment" "app_storage_blob_owner" {
  scope                = azurerm_storage_account.app.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# Queue triggers (alerts, policy-work, cost-partitions) read, update and delete messages, the
# code enqueues work and poison handling moves messages.
resource "azurerm_role_assignment" "app_storage_queue" {
  scope                = azurerm_storage_account.app.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# Operational state tables (idempotency, episodes, approvals, audit, ...): conditional inserts and
# updates.
resource "azurerm_role_assignment" "app_storage_table" {
  scope                = azurerm_storage_account.app.id
  role_definition_name = "Storage Table Data Contributor"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# cost_export_ingest reads the export files; read-only and only that container.
resource "azurerm_role_assignment" "app_cost_exports_reader" {
  scope                = azurerm_storage_container.cost_exports.resource_manager_id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# Key Vault references of the app settings resolve with this identity: read secrets, nothing else.
# Vault scope because operators add the optional secrets after the first deployment.
resource "azurerm_role_assignment" "app_kv_secrets_user" {
  scope                = azurerm_key_vault.main.id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# Telemetry with Entra auth (local auth is disabled on Application Insights).
resource "azurerm_role_assignment" "app_monitoring_publisher" {
  scope                = azurerm_application_insights.main.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------------
# The app's identity on the target subscriptions
# ---------------------------------------------------------------------------------------------

# Resource tags (owner routing), policy states and remediation task status are reads.
resource "azurerm_role_assignment" "app_reader" {
  for_each             = local.target_subscriptions
  scope                = "/subscriptions/${each.key}"
  role_definition_name = "Reader"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# Cost queries and forecasts for anomaly context (the exports cover the bulk data).
resource "azurerm_role_assignment" "app_cost_management_reader" {
  for_each             = local.target_subscriptions
  scope                = "/subscriptions/${each.key}"
  role_definition_name = "Cost Management Reader"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# Cost Management Query API for the scopes of COST_QUERY_SCOPES that are not target
# subscriptions (those already have Cost Management Reader above): without it the query answers 403.
resource "azurerm_role_assignment" "app_cost_query_reader" {
  for_each             = local.cost_query_extra_scopes
  scope                = each.key
  role_definition_name = "Cost Management Reader"
  principal_id         = local.app_principal_id
  principal_type       = "ServicePrincipal"
}

# Custom role with exactly what remediation needs: create, read and follow remediation tasks.
# Resource Policy Contributor would also let the app write policy assignments and exemptions.
resource "azurerm_role_definition" "policy_remediation" {
  count       = length(local.remediation_subscriptions) > 0 ? 1 : 0
  name        = "ValueFlow policy remediation (${var.environment_name})"
  scope       = "/subscriptions/${sort(tolist(local.remediation_subscriptions))[0]}"
  description = "ValueFlow Automations: create and follow Azure Policy remediation tasks; nothing else."

  permissions {
    actions     = local.policy_remediation_permissions
    not_actions = []
  }

  assignable_scopes = [for id in sort(tolist(local.remediation_subscriptions)) : "/subscriptions/${id}"]
}

# Remediation tasks only where remediation is enabled; deployIfNotExists/modify assignments
# deploy with their own identity, not this one.
resource "azurerm_role_assignment" "app_policy_remediation" {
  for_each           = local.remediation_subscriptions
  scope              = "/subscriptions/${each.key}"
  role_definition_id = azurerm_role_definition.policy_remediation[0].role_definition_resource_id
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

# Custom role with exactly the approved cost actions, assignable only to the action subscriptions.
resource "azurerm_role_definition" "cost_actions" {
  count       = length(local.action_subscriptions) > 0 ? 1 : 0
  name        = "ValueFlow cost actions (${var.environment_name})"
  scope       = "/subscriptions/${sort(tolist(local.action_subscriptions))[0]}"
  description = "Approved cost actions of ValueFlow Automations: deallocate VMs, scale AKS node pools, stop App Service apps, write budgets."

  permissions {
    actions     = local.cost_action_permissions
    not_actions = []
  }

  assignable_scopes = [for id in sort(tolist(local.action_subscriptions)) : "/subscriptions/${id}"]
}

# Approved actions (enforce mode only, after a human decision) on the action subscriptions only.
resource "azurerm_role_assignment" "app_cost_actions" {
  for_each           = local.action_subscriptions
  scope              = "/subscriptions/${each.key}"
  role_definition_id = azurerm_role_definition.cost_actions[0].role_definition_resource_id
  principal_id       = local.app_principal_id
  principal_type     = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------------
# Event Grid topics and Cost Management exports writing into the app's storage
# ---------------------------------------------------------------------------------------------

# Dead letters of the cost export topic; only the dead-letter container.
resource "azurerm_role_assignment" "cost_topic_dead_letter" {
  scope                = azurerm_storage_container.app[local.dead_letter_container].resource_manager_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_eventgrid_system_topic.cost_exports.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

# Dead letters of each policy topic; only the dead-letter container.
resource "azurerm_role_assignment" "policy_topic_dead_letter" {
  for_each             = local.target_subscriptions
  scope                = azurerm_storage_container.app[local.dead_letter_container].resource_manager_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azapi_resource.policy_topic[each.key].identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

# Each export writes its files with its own identity; only the cost-exports container.
resource "azurerm_role_assignment" "export_writer" {
  for_each             = local.target_subscriptions
  scope                = azurerm_storage_container.cost_exports.resource_manager_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azapi_resource.focus_export[each.key].identity[0].principal_id
  principal_type       = "ServicePrincipal"
}

# ---------------------------------------------------------------------------------------------
# The approval Logic App
# ---------------------------------------------------------------------------------------------

# Reads the function key and the Teams approvals webhook: those two secrets only.
resource "azurerm_role_assignment" "logic_app_secret_reader" {
  for_each             = azurerm_key_vault_secret.logic_app_placeholder
  scope                = each.value.resource_versionless_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azapi_resource.approval_workflow.identity[0].principal_id
  principal_type       = "ServicePrincipal"
}
