provider "azurerm" {
  subscription_id = var.subscription_id

  # Data-plane calls (queues, tables, Key Vault secrets) use Entra ID: the storage accounts have
  # shared keys disabled.
  storage_use_azuread = true

  features {
    key_vault {
      # Purge protection is on: a destroyed vault stays soft-deleted, never purged by Terraform.
      purge_soft_delete_on_destroy    = false
      recover_soft_deleted_key_vaults = true
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}

provider "azapi" {
  subscription_id = var.subscription_id
}
