-- Question: which GPU servers do runs use, and how many are busy right now?
SELECT eng_full_name, gpu_svr_code, COUNT(*) AS runs,
       SUM(CASE WHEN (status IS NULL OR status NOT IN ({{terminal_statuses}}))
                AND gone_at IS NULL THEN 1 ELSE 0 END)
           AS active_runs
FROM {{runs}}
GROUP BY eng_full_name, gpu_svr_code
