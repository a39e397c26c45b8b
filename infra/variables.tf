# ---------------------------------------------------------------------------------------------
# Where the app lives
# ---------------------------------------------------------------------------------------------

variable "subscription_id" {
  description = "Subscription that hosts the app (resource group, Function App, storage, Key Vault, Logic App)."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", var.subscription_id))
    error_message = "subscription_id must be a subscription GUID like 00000000-0000-0000-0000-000000000000 (see `az account show --query id -o tsv`)."
  }
}

variable "environment_name" {
  description = "Short environment name used in resource names (azd sets it from AZURE_ENV_NAME), e.g. dev, prod."
  type        = string

  validation {
    condition     = can(regex("^[a-z](-?[a-z0-9])+$", var.environment_name)) && length(var.environment_name) <= 16
    error_message = "environment_name must be 2-16 characters: lowercase letters, digits and single '-' between them, starting with a letter (e.g. dev, valueflow-dev); it becomes part of every resource name."
  }
}

variable "location" {
  description = "Azure region of the app, as a programmatic name (westeurope, eastus2, ...). Flex Consumption must be available there: `az functionapp list-flexconsumption-locations -o table`."
  type        = string

  validation {
    condition = contains([
      "australiaeast", "australiasoutheast", "brazilsouth", "canadacentral", "canadaeast",
      "centralindia", "centralus", "eastasia", "eastus", "eastus2", "francecentral",
      "germanywestcentral", "italynorth", "japaneast", "japanwest", "koreacentral",
      "mexicocentral", "northcentralus", "northeurope", "norwayeast", "polandcentral",
      "southafricanorth", "southcentralus", "southeastasia", "southindia", "spaincentral",
      "swedencentral", "switzerlandnorth", "uaenorth", "uksouth", "ukwest", "westcentralus",
      "westeurope", "westus", "westus2", "westus3",
    ], var.location)
    error_message = "location must be a programmatic Azure region name such as westeurope or eastus2 (lowercase, no spaces; `az account list-locations --query [].name -o tsv`). Display names like \"West Europe\" are not accepted."
  }
}

variable "tags" {
  description = "Tags added to every resource (merged with azd-env-name and app tags)."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------------------
# What the app watches and may act on
# ---------------------------------------------------------------------------------------------

variable "target_subscription_ids" {
  description = "Subscriptions the app governs: each gets a Policy state Event Grid system topic, a daily FOCUS cost export, and Reader + Cost Management Reader for the app's identity."
  type        = list(string)

  validation {
    condition     = length(var.target_subscription_ids) > 0
    error_message = "target_subscription_ids is empty: list at least one subscription GUID the app should watch."
  }

  validation {
    condition = alltrue([
      for id in var.target_subscription_ids :
      can(regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", id))
    ])
    error_message = "target_subscription_ids must hold bare subscription GUIDs (no /subscriptions/ prefix)."
  }

  validation {
    condition     = length(distinct([for id in var.target_subscription_ids : lower(id)])) == length(var.target_subscription_ids)
    error_message = "target_subscription_ids lists a subscription twice."
  }
}

variable "remediation_subscription_ids" {
  description = "Target subscriptions where the app may create policy remediation tasks (Resource Policy Contributor). Empty = report only everywhere."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.remediation_subscription_ids : contains([for t in var.target_subscription_ids : lower(t)], lower(id))])
    error_message = "Every remediation_subscription_ids entry must also be in target_subscription_ids."
  }
}

variable "action_subscription_ids" {
  description = "Target subscriptions where approved cost actions (VM deallocate, AKS node pool scale, budget write) may run through the custom role. Empty = no action rights."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.action_subscription_ids : contains([for t in var.target_subscription_ids : lower(t)], lower(id))])
    error_message = "Every action_subscription_ids entry must also be in target_subscription_ids."
  }
}

variable "event_subscriptions_enabled" {
  description = "Create the Event Grid subscriptions to the functions. Event Grid checks that the function exists, so on the very first deployment set false, publish the code, then set true and apply again."
  type        = bool
  default     = true
}

# ---------------------------------------------------------------------------------------------
# Budget of the app itself
# ---------------------------------------------------------------------------------------------

variable "budget_amount" {
  description = "Monthly budget (billing currency) of the app's own resource group."
  type        = number
  default     = 100

  validation {
    condition     = var.budget_amount > 0
    error_message = "budget_amount must be greater than 0."
  }
}

variable "budget_alert_emails" {
  description = "E-mail addresses notified at 80% actual and 100% forecast of the app's budget."
  type        = list(string)

  validation {
    condition     = length(var.budget_alert_emails) > 0
    error_message = "budget_alert_emails is empty: give at least one address for budget alerts."
  }

  validation {
    condition     = alltrue([for e in var.budget_alert_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[A-Za-z]{2,}$", e))])
    error_message = "budget_alert_emails must be valid e-mail addresses like finops@example.com."
  }
}

# ---------------------------------------------------------------------------------------------
# App settings (names in shared/settings.py); secrets are NOT variables: they go into Key Vault
# ---------------------------------------------------------------------------------------------

variable "snowflake" {
  description = "Snowflake connection (non-secret part). The key or password goes into Key Vault."
  type = object({
    account   = string
    user      = string
    role      = optional(string, "")
    warehouse = optional(string, "")
    database  = optional(string, "VALUEFLOW")
    schema    = optional(string, "CORE")
  })

  validation {
    condition     = length(trimspace(var.snowflake.account)) > 0 && length(trimspace(var.snowflake.user)) > 0
    error_message = "snowflake.account and snowflake.user are required: in Azure the warehouse is Snowflake."
  }
}

variable "servicenow" {
  description = "ServiceNow instance and non-secret credentials part. Empty instance_url = incidents go nowhere (no outbox in Azure)."
  type = object({
    instance_url = optional(string, "")
    username     = optional(string, "")
    client_id    = optional(string, "")
  })
  default = {}

  validation {
    condition     = var.servicenow.instance_url == "" || can(regex("^https://[A-Za-z0-9.-]+/?$", var.servicenow.instance_url))
    error_message = "servicenow.instance_url must be https://<instance>.service-now.com or empty."
  }
}

variable "azure_devops" {
  description = "Azure DevOps organization and project the app reads and writes (empty org_url: off), and the basic-auth user name the service-hook subscriptions send (its password is the ado-hook-password secret)."
  type = object({
    org_url       = optional(string, "")
    project       = optional(string, "")
    hook_username = optional(string, "")
  })
  default = {}

  validation {
    condition     = var.azure_devops.org_url == "" || can(regex("^https://[A-Za-z0-9.-]+(/[A-Za-z0-9._-]+)?/?$", var.azure_devops.org_url))
    error_message = "azure_devops.org_url must be https://dev.azure.com/<org> (or https://<org>.visualstudio.com) or empty."
  }
}

variable "backstage_url" {
  description = "Backstage backend base URL (empty: catalog refresh is off). Its token is the backstage-token secret."
  type        = string
  default     = ""

  validation {
    condition     = var.backstage_url == "" || can(regex("^https://", var.backstage_url))
    error_message = "backstage_url must be an https URL or empty."
  }
}

variable "dora" {
  description = "DORA metrics: production environment names, the Dynatrace priority rule (docs/dora.md), the service identity map (JSON or a path in the package), the Azure tag naming Backstage components, and the weekly digest schedule (NCRONTAB, UTC). The Dynatrace header secret is the dynatrace-webhook-secret secret."
  type = object({
    production_environments = optional(list(string), ["production", "prod"])
    priority_rules          = optional(string, "severity=AVAILABILITY|ERROR & env=production -> P1; env=production -> P2; * -> P3")
    service_map             = optional(string, "")
    component_tag           = optional(string, "backstage.io/component")
    digest_schedule         = optional(string, "0 0 8 * * 1")
  })
  default = {}

  validation {
    condition     = length(var.dora.production_environments) > 0 && can(regex("->", var.dora.priority_rules))
    error_message = "dora.production_environments must name at least one environment and dora.priority_rules needs 'conditions -> P1' rules."
  }
}

variable "teams_webhook_allowed_hosts" {
  description = "Host patterns a Teams Workflows webhook may point to."
  type        = list(string)
  default     = ["*.logic.azure.com", "*.environment.api.powerplatform.com", "*.webhook.office.com"]
}

variable "owner_tag_keys" {
  description = "Tag keys naming the owner squad, first match wins."
  type        = list(string)
  default     = ["owner", "squad", "team"]
}

variable "cost_critical_usd_per_hour" {
  description = "Excess $/hour above which a cost anomaly is critical (goes to approval)."
  type        = number
  default     = 1000
}

variable "cost_min_impact_usd_per_day" {
  description = "No cost alert under this excess $/day."
  type        = number
  default     = 10
}

variable "cost_scan_schedule" {
  description = "NCRONTAB (6 fields, UTC) of the daily cost scan; run after the daily export lands."
  type        = string
  default     = "0 30 6 * * *"

  validation {
    condition     = length(split(" ", trimspace(var.cost_scan_schedule))) == 6
    error_message = "cost_scan_schedule must be a 6-field NCRONTAB expression like '0 30 6 * * *'."
  }
}

variable "cost_center_tag_keys" {
  description = "Tag keys naming the cost center, first match wins (case-insensitive)."
  type        = list(string)
  default     = ["cost-center", "costcenter", "cost_center"]
}

variable "environment_tag_keys" {
  description = "Tag keys naming the environment, first match wins (case-insensitive)."
  type        = list(string)
  default     = ["env", "environment", "stage"]
}

variable "cost_feedback_suppress_days" {
  description = "Days a cost anomaly marked planned or not_anomaly silences alerts for its series."
  type        = number
  default     = 14

  validation {
    condition     = var.cost_feedback_suppress_days >= 0 && var.cost_feedback_suppress_days <= 365
    error_message = "cost_feedback_suppress_days must be between 0 and 365."
  }
}

variable "cost_partition_size" {
  description = "Series per scoring partition; above it the daily scan fans out on queue cost-partitions."
  type        = number
  default     = 15000

  validation {
    condition     = var.cost_partition_size >= 10
    error_message = "cost_partition_size must be at least 10."
  }
}

variable "cost_threshold_currency" {
  description = "Currency COST_CRITICAL_USD_PER_HOUR and COST_MIN_IMPACT_USD_PER_DAY are stated in (ISO 4217)."
  type        = string
  default     = "USD"

  validation {
    condition     = can(regex("^[A-Z]{3}$", var.cost_threshold_currency))
    error_message = "cost_threshold_currency must be an ISO 4217 code like USD or EUR."
  }
}

variable "cost_currency_rates" {
  description = "Explicit rates: currency => units of cost_threshold_currency per 1 unit (e.g. { EUR = 1.08 }). Series in a currency without a rate are not scored."
  type        = map(number)
  default     = {}
}

variable "cost_query_scopes" {
  description = "Scopes (/subscriptions/<id> or a resource group under one) without exports whose daily cost the scan pulls from the Cost Management Query API; the app gets Cost Management Reader on each."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for s in var.cost_query_scopes :
      can(regex("^/subscriptions/[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(/resourceGroups/[-\\w._()]+)?$", s))
    ])
    error_message = "cost_query_scopes takes /subscriptions/<guid> or /subscriptions/<guid>/resourceGroups/<name> entries only."
  }
}

variable "remediation_watch_schedule" {
  description = "NCRONTAB (6 fields, UTC) of the remediation watch."
  type        = string
  default     = "0 */5 * * * *"

  validation {
    condition     = length(split(" ", trimspace(var.remediation_watch_schedule))) == 6
    error_message = "remediation_watch_schedule must be a 6-field NCRONTAB expression like '0 */5 * * * *'."
  }
}

variable "remediation_mode" {
  description = "dry-run decides and reports only; enforce creates remediation tasks and runs approved actions."
  type        = string
  default     = "dry-run"

  validation {
    condition     = contains(["dry-run", "enforce"], var.remediation_mode)
    error_message = "remediation_mode must be dry-run or enforce."
  }
}

variable "remediation_allowed_assignments" {
  description = "Policy assignment id patterns that may be remediated."
  type        = list(string)
  default     = ["*"]
}

variable "remediation_denied_assignments" {
  description = "Policy assignment id patterns never remediated (wins over allowed)."
  type        = list(string)
  default     = []
}

variable "policy_incident_assignments" {
  description = "Policy assignment id patterns whose unremediable violations also open a ServiceNow incident (others: Teams only)."
  type        = list(string)
  default     = []
}

variable "actions_protected_subscriptions" {
  description = "Subscription ids never acted on, even when approved."
  type        = list(string)
  default     = []
}

variable "actions_protected_tag" {
  description = "Tag key that protects a resource (or its resource group) from approved cost actions when its value is true."
  type        = string
  default     = "valueflow:protected"
}

variable "callback_allowed_hosts" {
  description = "Host patterns a Logic App callbackUrl may point to."
  type        = list(string)
  default     = ["*.logic.azure.com"]
}

variable "secrets_in_key_vault" {
  description = "Secret app settings whose Key Vault secret you have created (README, Deploy to Azure). Only these get a Key Vault reference: an unresolved reference would reach the app as a literal string."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([for s in var.secrets_in_key_vault : contains([
      "SNOWFLAKE_PRIVATE_KEY", "SNOWFLAKE_PASSWORD", "SERVICENOW_PASSWORD", "SERVICENOW_CLIENT_SECRET",
      "ALERT_ROUTES", "TEAMS_DEFAULT_WEBHOOK_URL", "ADO_HOOK_PASSWORD", "ADO_HOOK_SECRET", "AZURE_DEVOPS_PAT",
      "BACKSTAGE_TOKEN", "DYNATRACE_WEBHOOK_SECRET",
    ], s)])
    error_message = "secrets_in_key_vault may only name SNOWFLAKE_PRIVATE_KEY, SNOWFLAKE_PASSWORD, SERVICENOW_PASSWORD, SERVICENOW_CLIENT_SECRET, ALERT_ROUTES, TEAMS_DEFAULT_WEBHOOK_URL, ADO_HOOK_PASSWORD, ADO_HOOK_SECRET, AZURE_DEVOPS_PAT, BACKSTAGE_TOKEN, DYNATRACE_WEBHOOK_SECRET (APPLICATIONINSIGHTS_CONNECTION_STRING and APPROVAL_LOGIC_APP_URL are written by Terraform)."
  }
}

# ---------------------------------------------------------------------------------------------
# Sizing and retention
# ---------------------------------------------------------------------------------------------

variable "maximum_instance_count" {
  description = "Flex Consumption scale-out limit (also bounds concurrent ARM writes)."
  type        = number
  default     = 40

  validation {
    condition     = var.maximum_instance_count >= 1 && var.maximum_instance_count <= 1000
    error_message = "maximum_instance_count must be between 1 and 1000."
  }
}

variable "log_retention_days" {
  description = "Log Analytics retention in days."
  type        = number
  default     = 90

  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days must be between 30 and 730."
  }
}
