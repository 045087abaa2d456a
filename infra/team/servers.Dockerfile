# The MLflow and Prefect servers of team mode, at the versions and pins of .venv (pyproject.toml, STACK-FACTS).
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg2-binary==2.9.13" "prefect==3.8.8" "asyncpg==0.32.0" \
    "fastapi<0.155" "sqlalchemy<2.1" \
 && apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
