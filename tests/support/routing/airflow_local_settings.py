"""A cluster policy for the Celery test: the dissemination chain alternates between workers ``a``
and ``b`` (each listens on the queue of its own name), so every handoff crosses machines: what a
task staged must be read on the other worker. Real deployments route the same way, e.g. a worker
near the partners' network for ``deliver``."""

ROUTE = {"resolve_request": "a", "pull_rounds": "a", "validate_rounds": "b", "plan": "a",
         "package": "b", "deliver": "a", "notify": "b", "finish": "a"}


def task_policy(task) -> None:
    if task.dag_id == "urgent_dissemination" and task.task_id in ROUTE:
        task.queue = ROUTE[task.task_id]
