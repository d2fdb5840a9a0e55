-- Question: how long did runs wait before they started, per project and week created (median and 90th percentile)?
-- Runs seen waiting or running (started_source 'history' in nsml_run_timeline): a run first
-- seen finished has no wait worth the name. Percentiles by nearest rank (the smallest wait with
-- at least half, or nine tenths, of the runs at or below it), in seconds. scope says what a row
-- covers: 'project' (one project's runs) or 'all projects' (one row per week, project_id NULL,
-- every project's runs): sum or average over one scope only (WHERE scope = 'project'), or each
-- run counts twice.
SELECT w.week,
       CASE WHEN s.scope = 'project' THEN 'project' ELSE 'all projects' END AS scope,
       CASE WHEN s.scope = 'project' THEN w.project_id END AS project_id,
       MAX(CASE WHEN s.scope = 'project' THEN w.project_name END) AS project_name,
       COUNT(*) AS runs,
       MAX(CASE WHEN s.scope = 'project' AND w.project_rank
                     = {{int_div(w.project_runs + 1, 2)}}
                  OR s.scope = 'all' AND w.week_rank = {{int_div(w.week_runs + 1, 2)}}
                THEN w.queue_wait_s END) AS median_wait_s,
       MAX(CASE WHEN s.scope = 'project' AND w.project_rank
                     = {{int_div(9 * w.project_runs + 9, 10)}}
                  OR s.scope = 'all' AND w.week_rank = {{int_div(9 * w.week_runs + 9, 10)}}
                THEN w.queue_wait_s END) AS p90_wait_s
FROM (
    -- ranks within all projects apart from those within each project: MariaDB 10.11 numbers
    -- rows wrongly when one SELECT has ROW_NUMBER()s over different partitions
    SELECT y.*, ROW_NUMBER() OVER (PARTITION BY week ORDER BY queue_wait_s) AS week_rank,
           COUNT(*) OVER (PARTITION BY week) AS week_runs
    FROM (
        SELECT {{week_start(created_at)}} AS week, project_id, project_name, queue_wait_s,
               ROW_NUMBER() OVER (PARTITION BY {{week_start(created_at)}}, project_id
                                  ORDER BY queue_wait_s) AS project_rank,
               COUNT(*) OVER (PARTITION BY {{week_start(created_at)}}, project_id)
                   AS project_runs
        FROM ({{include(nsml_run_timeline)}}) tl
        WHERE queue_wait_s IS NOT NULL AND started_source = 'history'
    ) y
) w
-- each run once for its project and once for all projects, from one pass over the timeline
CROSS JOIN (SELECT 'project' AS scope UNION ALL SELECT 'all') s
GROUP BY w.week, s.scope, CASE WHEN s.scope = 'project' THEN w.project_id END
