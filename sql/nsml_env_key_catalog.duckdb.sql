-- Question: which env keys are in use, in how many runs, with how many distinct values?
SELECT j.key AS env_key, COUNT(*) AS runs, COUNT(DISTINCT j.value) AS distinct_values
FROM {{runs}} AS r, json_each({{envs_json(r.envs)}}) AS j
WHERE r.envs IS NOT NULL
GROUP BY j.key
