-- Question: every env key and value of every run, one row each, whether or not the key has a column?
-- Values as in the run's env column: strings as they are, other values as JSON (numbers as sent).
SELECT r.project_id, r.run_name, k.env_key COLLATE {{key_collation}} AS env_key,
       CASE WHEN JSON_TYPE(JSON_EXTRACT(r.envs, CONCAT('$.', JSON_QUOTE(k.env_key)))) = 'NULL'
            THEN NULL
            ELSE JSON_UNQUOTE(JSON_EXTRACT(r.envs, CONCAT('$.', JSON_QUOTE(k.env_key))))
       END AS value
FROM {{runs}} AS r,
     JSON_TABLE(JSON_KEYS(r.envs), '$[*]' COLUMNS (env_key TEXT PATH '$')) AS k
WHERE r.envs IS NOT NULL
