-- Question: every env key and value of every run, one row each, whether or not the key has a column?
-- Values as in the run's env column: strings as they are, other values as JSON (numbers as DuckDB's JSON reader gives them back: 1.50 shows as 1.5).
SELECT r.project_id, r.run_name, j.key AS env_key,
       CASE j.type
           WHEN 'NULL' THEN NULL
           WHEN 'VARCHAR' THEN json_extract_string(j.value, '$')
           ELSE CAST(j.value AS VARCHAR)
       END AS value
FROM {{runs}} AS r, json_each({{envs_json(r.envs)}}) AS j
WHERE r.envs IS NOT NULL
