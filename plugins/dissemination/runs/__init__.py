"""The steps of one dissemination run: stage, plan, package; and the deadlines and
password rotations around them.

stage (read the round once; Secret columns never reach the disk) -> plan (classify the
round once, select per agreement) -> package (one zip per delivery) -> ``delivery``.
What flows between the steps is small, JSON-friendly and free of data values and
secrets, because Airflow stores it as XCom.
"""

from .._exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "deadlines": ("DeadlineState", "DeadlinesMissed", "deadline_states",),
    "memory": ("holds_a_round",),
    "packaging": (
        "PackagingRun", "alike", "package_deliveries", "package_workers", "packaged_columns",
        "round_columns", "tables_held",
    ),
    "passwords": ("new_password", "rotate_password", "rotations_due",),
    "plan": ("Findings", "UnknownAgreement", "plan_deliveries", "recipients",),
    "stage": ("export_reader", "pull_round", "stage_round",),
})
