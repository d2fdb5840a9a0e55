-- Question: how long did runs wait before they started, per project and week created (median and 90th percentile)?
-- Runs seen waiting or running (started_source 'history' in nsml_run_timeline): a run first
-- seen finished has no wait worth the name. Percentiles by nearest rank (the smallest wait with
-- at least half, or nine tenths, of the runs at or below it), in seconds; one row per week with
-- project_id NULL covers all projects.
WITH waits AS (
    SELECT {{week_start(created_at)}} AS week, project_id, project_name, queue_wait_s,
           ROW_NUMBER() OVER (PARTITION BY {{week_start(created_at)}}, project_id
                              ORDER BY queue_wait_s) AS project_rank,
           COUNT(*) OVER (PARTITION BY {{week_start(created_at)}}, project_id) AS project_runs,
           ROW_NUMBER() OVER (PARTITION BY {{week_start(created_at)}}
                              ORDER BY queue_wait_s) AS week_rank,
           COUNT(*) OVER (PARTITION BY {{week_start(created_at)}}) AS week_runs
    FROM ({{include(nsml_run_timeline)}}) t
    WHERE queue_wait_s IS NOT NULL AND started_source = 'history'
)
SELECT week, project_id, MAX(project_name) AS project_name, COUNT(*) AS runs,
       MAX(CASE WHEN project_rank = {{int_div(project_runs + 1, 2)}} THEN queue_wait_s END)
           AS median_wait_s,
       MAX(CASE WHEN project_rank = {{int_div(9 * project_runs + 9, 10)}} THEN queue_wait_s END)
           AS p90_wait_s
FROM waits
GROUP BY week, project_id
UNION ALL
SELECT week, NULL, NULL, COUNT(*),
       MAX(CASE WHEN week_rank = {{int_div(week_runs + 1, 2)}} THEN queue_wait_s END),
       MAX(CASE WHEN week_rank = {{int_div(9 * week_runs + 9, 10)}} THEN queue_wait_s END)
FROM waits
GROUP BY week
