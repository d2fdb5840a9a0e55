-- Question: who starts runs, in how many projects, how many are active, and when last?
SELECT creator, COUNT(*) AS runs, COUNT(DISTINCT project_id) AS projects,
       SUM(CASE WHEN (status IS NULL OR status NOT IN ({{terminal_statuses}}))
                AND gone_at IS NULL THEN 1 ELSE 0 END)
           AS active_runs,
       MAX(create_time) AS last_created
FROM {{runs}}
GROUP BY creator
