# azd reads outputs named in upper case into its environment.

output "AZURE_LOCATION" {
  description = "Region of the app."
  value       = azurerm_resource_group.main.location
}

output "AZURE_RESOURCE_GROUP" {
  description = "Resource group of the app."
  value       = azurerm_resource_group.main.name
}

output "AZURE_FUNCTION_APP_NAME" {
  description = "Function App name (az functionapp ..., func azure functionapp publish)."
  value       = azurerm_function_app_flex_consumption.app.name
}

output "FUNCTION_APP_URL" {
  description = "Base URL of the HTTP functions."
  value       = "https://${azurerm_function_app_flex_consumption.app.default_hostname}"
}

output "AZURE_KEY_VAULT_NAME" {
  description = "Key Vault holding the secrets (az keyvault secret set --vault-name ...)."
  value       = azurerm_key_vault.main.name
}

output "APP_STORAGE_ACCOUNT" {
  description = "Operational storage (queues, tables, reports, Event Grid dead letters)."
  value       = azurerm_storage_account.app.name
}

output "COST_EXPORT_STORAGE_ACCOUNT" {
  description = "Storage account receiving the FOCUS exports."
  value       = azurerm_storage_account.cost_exports.name
}

output "APP_IDENTITY_CLIENT_ID" {
  description = "Client id of the app's user-assigned identity."
  value       = azurerm_user_assigned_identity.app.client_id
}

output "APPROVAL_LOGIC_APP_NAME" {
  description = "Name of the approval Logic App."
  value       = azapi_resource.approval_workflow.name
}
