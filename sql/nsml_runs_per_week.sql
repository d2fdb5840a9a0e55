-- Question: how many runs were created each week, by status (runs found through the run list)?
SELECT {{week_start(create_time)}} AS week, status, COUNT(*) AS runs
FROM {{runs}}
WHERE create_time IS NOT NULL
GROUP BY {{week_start(create_time)}}, status
