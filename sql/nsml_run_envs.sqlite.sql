-- Question: every env key and value of every run, one row each, whether or not the key has a column?
-- Values as in the run's env column: strings as they are, other values as JSON (numbers as sent).
SELECT r.project_id, r.run_name, j.key AS env_key,
       CASE j.type
           WHEN 'null' THEN NULL
           WHEN 'text' THEN j.value
           WHEN 'true' THEN 'true'
           WHEN 'false' THEN 'false'
           WHEN 'object' THEN j.value
           WHEN 'array' THEN j.value
           ELSE COALESCE(r.envs -> j.fullkey, CAST(j.value AS TEXT))
       END AS value
FROM {{runs}} AS r,
     json_each({{envs_json(r.envs)}}) AS j
WHERE r.envs IS NOT NULL
