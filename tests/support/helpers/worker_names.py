"""``AIRFLOW__CORE__HOSTNAME_CALLABLE`` for test workers: several workers on one machine each
report their own name, so a test can tell which one ran a task instance."""

import os


def hostname() -> str:
    return os.environ["DISSEMINATION_TEST_WORKER_NAME"]
