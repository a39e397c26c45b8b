"""The Function App: a list of blueprint registrations, nothing else."""

import azure.functions as func

from functions import alerts, approvals, costs, demands, devops_hooks, dora, health, housekeeping, policy, review

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(health.bp)
app.register_functions(alerts.bp)
app.register_functions(policy.bp)
app.register_functions(approvals.bp)
app.register_functions(costs.bp)
app.register_functions(devops_hooks.bp)
app.register_functions(demands.bp)
app.register_functions(dora.bp)
app.register_functions(review.bp)
app.register_functions(housekeeping.bp)
