-- Question: every env key and value of every run, one row each, whether or not the key has a column?
-- Values as in the run's env column: strings as they are, other values as JSON (numbers as sent).
-- PostgreSQL text cannot hold U+0000: envs keeps it as the escape \u0000, shown here as U+FFFD.
SELECT r.project_id, r.run_name, j.key AS env_key, j.value
FROM {{runs}} AS r CROSS JOIN LATERAL json_each_text({{envs_json(r.envs)}}) AS j
WHERE r.envs IS NOT NULL
