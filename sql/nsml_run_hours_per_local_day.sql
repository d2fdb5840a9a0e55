-- Question: how many run-hours, GPU-hours and node-hours did each project and creator use on each GPU server, day by day (days in the zone the views were made with: views --timezone)?
-- A run counts from active_from to active_until of nsml_run_timeline (its estimated start to
-- its estimated end, or its last sighting while it runs), cut at the local days of nsml_calendar
-- (written by nsml-etl with zoneinfo: exact on every database). GPU-hours are run-hours times
-- the server's GPUs in nsml_gpu_servers times the run's nodes, NULL where the server has no
-- GPU count; node-hours are run-hours times nodes. Hours to 0.0001 h (0.36 s). A calendar
-- month is the sum of its days (day >= the 1st AND day < the 1st of the next month).
SELECT s.day, MAX(s.zone) AS zone, s.project_id, MAX(s.project_name) AS project_name,
       s.creator, s.eng_full_name, s.gpu_svr_code, COUNT(*) AS active_runs,
       ROUND(SUM(s.seconds) / 3600.0, 4) AS run_hours,
       MAX(g.gpus) AS gpus,
       ROUND(SUM(s.seconds * s.nodes) * MAX(g.gpus) / 3600.0, 4) AS gpu_hours,
       ROUND(SUM(s.seconds * s.nodes) / 3600.0, 4) AS node_hours
FROM (
    SELECT c.day, c.zone, tl.project_id, tl.project_name, tl.creator, tl.eng_full_name,
           tl.gpu_svr_code, tl.nodes,
           {{seconds_between({{later(tl.active_from, c.start_utc)}},
                             {{earlier(tl.active_until, c.end_utc)}})}} AS seconds
    -- the timeline first (SQLite keeps the order of a CROSS JOIN), then the days of each span
    -- through the calendar's index (a day that ends after a span starts began at most 25 hours
    -- before it: 2 days is a bound that never cuts one off)
    FROM ({{include(nsml_run_timeline)}}) tl
    CROSS JOIN {{calendar}} c
    WHERE tl.active_from IS NOT NULL AND tl.active_until IS NOT NULL
      AND c.scope = 'local' AND c.start_utc < tl.active_until
      AND c.start_utc >= {{days_before(tl.active_from, 2)}}
      AND c.end_utc > tl.active_from
) s
LEFT JOIN {{gpu_servers}} g ON g.gpu_svr_code = s.gpu_svr_code
WHERE s.seconds > 0
GROUP BY s.day, s.project_id, s.creator, s.eng_full_name, s.gpu_svr_code
