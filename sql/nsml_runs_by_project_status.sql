-- Question: how many runs does each project have in each status?
SELECT project_id, MAX(project_name) AS project_name, status, COUNT(*) AS runs
FROM {{runs}}
GROUP BY project_id, status
