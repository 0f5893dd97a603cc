# Airflow image with the pipeline's pinned runtime dependencies (used by docker-compose.yaml). The
# pins include apache-airflow-providers-celery and its Celery/kombu/redis client for the
# CeleryExecutor. requirements.txt only: no test tool (requirements-test.txt) enters the image. The
# code is not installed: compose mounts plugins/ on PYTHONPATH, so an image serves any checkout.
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt constraints.txt /tmp/deps/
RUN pip install --no-cache-dir -r /tmp/deps/requirements.txt -c /tmp/deps/constraints.txt
# Mount points created in the image so that fresh volumes (the shared staging and file drop, each
# container's private work folder) start owned by airflow and writable by group 0, whatever
# AIRFLOW_UID the containers run as.
USER root
RUN mkdir -p /opt/airflow/staging /opt/airflow/drop /opt/airflow/work \
 && chown airflow:0 /opt/airflow/staging /opt/airflow/drop /opt/airflow/work \
 && chmod 2775 /opt/airflow/staging /opt/airflow/drop /opt/airflow/work
USER airflow
