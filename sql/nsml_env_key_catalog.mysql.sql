-- Question: which env keys are in use, in how many runs, with how many distinct values?
SELECT k.env_key COLLATE {{key_collation}} AS env_key, COUNT(*) AS runs,
       COUNT(DISTINCT CASE
           WHEN JSON_TYPE(JSON_EXTRACT(r.envs, CONCAT('$.', JSON_QUOTE(k.env_key)))) <> 'NULL'
           THEN JSON_UNQUOTE(JSON_EXTRACT(r.envs, CONCAT('$.', JSON_QUOTE(k.env_key))))
                COLLATE {{key_collation}}
       END) AS distinct_values
FROM {{runs}} AS r,
     JSON_TABLE(JSON_KEYS(r.envs), '$[*]' COLUMNS (env_key VARCHAR(700) PATH '$')) AS k
WHERE r.envs IS NOT NULL
GROUP BY k.env_key COLLATE {{key_collation}}
