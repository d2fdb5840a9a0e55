-- Question: how long has each run spent in each status (so far, for its current one)?
-- (A current version's start comes from the exporting machine's clock and "now" from the
-- database's, so a version seen a moment ago is clamped at zero rather than going negative.
-- A run deleted upstream stops counting when an export found it gone.)
SELECT h.project_id, h.run_name, h.status,
       SUM(CASE WHEN h.valid_to IS NOT NULL
                THEN {{seconds_between(h.valid_from, h.valid_to)}}
                WHEN {{seconds_between(h.valid_from, COALESCE(r.gone_at, {{now}}))}} > 0
                THEN {{seconds_between(h.valid_from, COALESCE(r.gone_at, {{now}}))}}
                ELSE 0 END) AS seconds,
       MIN(h.valid_from) AS first_seen,
       MAX(COALESCE(h.valid_to, r.gone_at, {{now}})) AS last_seen
FROM {{history}} h
LEFT JOIN {{runs}} r ON r.project_id = h.project_id AND r.run_name = h.run_name
WHERE h.table_name = {{table_name}}
GROUP BY h.project_id, h.run_name, h.status
