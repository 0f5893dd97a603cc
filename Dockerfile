# Airflow image with the pipeline's pinned dependencies (used by docker-compose.yaml).
FROM apache/airflow:3.3.2-python3.11
COPY requirements.txt constraints.txt /tmp/deps/
RUN pip install --no-cache-dir -r /tmp/deps/requirements.txt -c /tmp/deps/constraints.txt
