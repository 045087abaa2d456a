-- The databases team mode keeps on one PostgreSQL: MLflow's tracking store and registry, MLflow's users and
-- permissions (basic auth), and Prefect's flow and task runs. Run once on a new cluster by infra/team.sh and by the
-- postgres image (/docker-entrypoint-initdb.d), as the cluster's owner `team`.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
CREATE DATABASE prefect;
