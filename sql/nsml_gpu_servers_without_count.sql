-- Question: which GPU servers have runs but no GPU count (so their GPU-hours are unknown)?
-- Set one with: nsml-etl gpu-servers set CODE GPUS, or load a TOML file (gpu-servers suggest
-- prints one with the counts the servers' names state).
SELECT r.gpu_svr_code, MAX(r.eng_full_name) AS eng_full_name, COUNT(*) AS runs,
       MAX(r.create_time) AS last_created
FROM {{runs}} r
LEFT JOIN {{gpu_servers}} g ON g.gpu_svr_code = r.gpu_svr_code
WHERE r.gpu_svr_code IS NOT NULL AND g.gpu_svr_code IS NULL
GROUP BY r.gpu_svr_code
