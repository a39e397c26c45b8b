"""Timer `housekeeping` (HOUSEKEEPING_SCHEDULE, daily): deletes expired idempotency records and ended
storm windows (`shared/housekeeping.py`), so the state tables stay the size of what is live."""

import logging
from datetime import UTC, datetime

import azure.functions as func

from shared.housekeeping import purge
from shared.observability import invocation
from shared.runtime import get_runtime

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("housekeeping")
@bp.timer_trigger(arg_name="timer", schedule="%HOUSEKEEPING_SCHEDULE%", run_on_startup=False)
def housekeeping(timer: func.TimerRequest) -> None:
    with invocation("housekeeping"):
        deleted = purge(get_runtime().storage, datetime.now(UTC))
        log.info("housekeeping done", extra={"deleted": deleted, "past_due": timer.past_due})
