-- Runs once, when the postgres volume is first initialised: one database for the MLflow
-- tracking store and one for Optuna's shared study storage.
CREATE DATABASE mlflow;
CREATE DATABASE optuna;
