-- Question: how many run-hours, node-hours and GPU-hours (where a server's GPU count is known) did each project use on each GPU server, week by week?
-- A run counts from its estimated start to its estimated end (to its last sighting while it
-- runs; see nsml_run_timeline), split at week boundaries (Mondays, UTC). Node-hours are
-- run-hours times the run's nodes (its last node list, export --nodes; 1 without one); GPU-hours
-- are node-hours times the server's GPUs in nsml_gpu_servers, NULL where it has none.
WITH RECURSIVE spans (project_id, project_name, eng_full_name, gpu_svr_code, nodes,
                      active_from, active_until, week) AS (
    SELECT project_id, project_name, eng_full_name, gpu_svr_code, nodes, active_from,
           active_until, {{week_start(active_from)}}
    FROM ({{include(nsml_run_timeline)}}) t
    WHERE active_from IS NOT NULL AND active_until IS NOT NULL
      AND {{seconds_between(active_from, active_until)}} > 0
    UNION ALL
    SELECT project_id, project_name, eng_full_name, gpu_svr_code, nodes, active_from,
           active_until, {{next_week(week)}}
    FROM spans
    WHERE {{seconds_between({{next_week(week)}}, active_until)}} > 0
)
SELECT s.week, s.project_id, MAX(s.project_name) AS project_name, s.eng_full_name,
       s.gpu_svr_code, COUNT(*) AS active_runs,
       ROUND(SUM({{seconds_between({{later(s.active_from, s.week)}},
                                   {{earlier(s.active_until, {{next_week(s.week)}})}})}})
             / 3600.0, 2) AS run_hours,
       MAX(g.gpus) AS gpus,
       ROUND(SUM({{seconds_between({{later(s.active_from, s.week)}},
                                   {{earlier(s.active_until, {{next_week(s.week)}})}})}}
                 * s.nodes)
             * MAX(g.gpus) / 3600.0, 2) AS gpu_hours,
       ROUND(SUM({{seconds_between({{later(s.active_from, s.week)}},
                                   {{earlier(s.active_until, {{next_week(s.week)}})}})}}
                 * s.nodes) / 3600.0, 2) AS node_hours
FROM spans s
LEFT JOIN {{gpu_servers}} g ON g.gpu_svr_code = s.gpu_svr_code
GROUP BY s.week, s.project_id, s.eng_full_name, s.gpu_svr_code
