-- Question: how many runs does each project have in each status, and how many of them were deleted upstream (gone = 1: the status is the last one seen)?
SELECT project_id, MAX(project_name) AS project_name, status{{exact}} AS status,
       CASE WHEN gone_at IS NULL THEN 0 ELSE 1 END AS gone, COUNT(*) AS runs
FROM {{runs}}
GROUP BY project_id, status{{exact}}, CASE WHEN gone_at IS NULL THEN 0 ELSE 1 END
