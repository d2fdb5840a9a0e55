-- Question: how long has each run spent in each status (so far, for its current one)?
-- (A current version's start comes from the exporting machine's clock and "now" from the
-- database's, so a version seen a moment ago is clamped at zero rather than going negative.)
SELECT project_id, run_name, status,
       SUM(CASE WHEN valid_to IS NOT NULL
                THEN {{seconds_between(valid_from, valid_to)}}
                WHEN {{seconds_between(valid_from, {{now}})}} > 0
                THEN {{seconds_between(valid_from, {{now}})}}
                ELSE 0 END) AS seconds,
       MIN(valid_from) AS first_seen, MAX(COALESCE(valid_to, {{now}})) AS last_seen
FROM {{history}}
WHERE table_name = {{table_name}}
GROUP BY project_id, run_name, status
