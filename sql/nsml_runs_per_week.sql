-- Question: how many runs were created each week, by status and whether deleted upstream (gone = 1: the status is the last one seen; runs found through the run list)?
SELECT {{week_start(create_time)}} AS week, status{{exact}} AS status,
       CASE WHEN gone_at IS NULL THEN 0 ELSE 1 END AS gone, COUNT(*) AS runs
FROM {{runs}}
WHERE create_time IS NOT NULL
GROUP BY {{week_start(create_time)}}, status{{exact}}, CASE WHEN gone_at IS NULL THEN 0 ELSE 1 END
