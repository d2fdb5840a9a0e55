-- Question: when was each run created, started and ended, how long did it wait and run, and how sure is each estimate?
-- Get run has no times, so each moment is estimated from what was stored, with its bounds
-- (*_earliest, *_latest) and the sources used (*_source); *_at is the midpoint of the bounds,
-- or the exact time where a source gives one (NULL while a bound is unknown):
--   created: the run list's createTime ('list'); else between the export before the run was
--     first seen and that first sighting ('history').
--   started: after the last sighting not yet started (waiting), up to the first sighting
--     started ('history'); a run first seen finished, not CANCELED, started somewhere between
--     its last sighting before (or its creation) and its end ('inferred').
--   ended: the run list's updateTime when it lies between the last sighting unfinished and the
--     first sighting finished ('list'); else those two sightings ('history'); a run that the
--     API answered 404 while unfinished: between its last fetch and the 404 ('gone').
-- A sighting is an export's fetch (the change history keeps the first of each version); the
-- export before a sighting is the last complete export (succeeded or partial) of this table
-- started before it, taken to have fetched the run: true when every export covers every
-- unfinished run (--all, or the same --project or pairs each time).
-- Waits and run times are in seconds, with their smallest and largest values; active_from and
-- active_until span the time counted as run time (to the last sighting while still running).
-- created_at is the first time column: BI tools (Superset) take the first one as a dataset's
-- time axis, and runs are charted by when they were created; gone_at and last_seen follow the
-- estimates.
-- nodes: how many nodes the run ran on, from its last stored node list (nsml_run_nodes, export
-- --nodes); 1 where no node list is stored.
-- (Few levels of subqueries: SQLite's parser stops at a fixed depth, and other views include
-- this one.)
SELECT project_id, project_name, run_name, creator, eng_full_name, gpu_svr_code,
       image_type, image_path, final_status, finished,
       {{midpoint(created_earliest, created_latest)}} AS created_at,
       created_earliest, created_latest, created_source,
       {{midpoint(started_earliest, started_latest)}} AS started_at,
       started_earliest, started_latest, started_source,
       {{midpoint(ended_earliest, ended_latest)}} AS ended_at,
       ended_earliest, ended_latest, ended_source, gone_at, last_seen,
       -- the distance between two midpoints is the mean of the distances between the bounds
       ROUND(({{seconds_between(created_earliest, started_earliest)}}
              + {{seconds_between(created_latest, started_latest)}}) / 2, 3) AS queue_wait_s,
       ROUND(CASE WHEN {{seconds_between(created_latest, started_earliest)}} < 0 THEN 0
                  ELSE {{seconds_between(created_latest, started_earliest)}} END, 3)
           AS queue_wait_min_s,
       ROUND({{seconds_between(created_earliest, started_latest)}}, 3) AS queue_wait_max_s,
       ROUND(({{seconds_between(started_earliest, ended_earliest)}}
              + {{seconds_between(started_latest, ended_latest)}}) / 2, 3) AS run_time_s,
       ROUND(CASE WHEN {{seconds_between(started_latest, ended_earliest)}} < 0 THEN 0
                  ELSE {{seconds_between(started_latest, ended_earliest)}} END, 3)
           AS run_time_min_s,
       ROUND({{seconds_between(started_earliest, ended_latest)}}, 3) AS run_time_max_s,
       COALESCE({{midpoint(started_earliest, started_latest)}}, started_latest) AS active_from,
       CASE WHEN started_latest IS NULL THEN NULL
            WHEN finished = 1 OR gone_at IS NOT NULL
            THEN COALESCE({{midpoint(ended_earliest, ended_latest)}}, ended_latest)
            ELSE last_seen END AS active_until,
       nodes
FROM (
    SELECT b.*,
           CASE WHEN b.term_first IS NOT NULL THEN
                    CASE WHEN b.list_end = 1 THEN b.update_time ELSE b.term_earliest END
                WHEN b.gone_at IS NOT NULL THEN b.last_seen END AS ended_earliest,
           CASE WHEN b.term_first IS NOT NULL THEN
                    CASE WHEN b.list_end = 1 THEN b.update_time ELSE b.term_first END
                WHEN b.gone_at IS NOT NULL THEN b.gone_at END AS ended_latest,
           CASE WHEN b.term_first IS NOT NULL THEN
                    CASE WHEN b.list_end = 1 THEN 'list' ELSE 'history' END
                WHEN b.gone_at IS NOT NULL THEN 'gone' END AS ended_source,
           CASE WHEN b.run_first IS NOT NULL THEN b.run_earliest
                WHEN b.term_first IS NOT NULL AND b.final_status IN ({{ran_statuses}})
                THEN b.term_earliest END AS started_earliest,
           -- a run never seen running started by its end
           CASE WHEN b.run_first IS NOT NULL THEN b.run_first
                WHEN b.term_first IS NOT NULL AND b.final_status IN ({{ran_statuses}})
                THEN CASE WHEN b.list_end = 1 THEN b.update_time ELSE b.term_first END
           END AS started_latest,
           CASE WHEN b.run_first IS NOT NULL THEN 'history'
                WHEN b.term_first IS NOT NULL AND b.final_status IN ({{ran_statuses}})
                THEN 'inferred' END AS started_source
    FROM (
        SELECT r.project_id, r.project_name, r.run_name, r.creator, r.eng_full_name,
               r.gpu_svr_code, r.image_type, r.image_path, r.status AS final_status,
               CASE WHEN r.status IN ({{terminal_statuses}}) THEN 1 ELSE 0 END AS finished,
               r.gone_at, r.fetched_at AS last_seen, r.update_time,
               -- its node count in its last node list (export --nodes); 1 where none is
               -- stored (an export without --nodes, or a list that failed)
               (SELECT CASE WHEN COUNT(*) > 0 THEN COUNT(*) ELSE 1 END FROM {{nodes}} n
                WHERE n.project_id = r.project_id AND n.run_name = r.run_name) AS nodes,
               COALESCE(r.create_time, p.first_prev_export) AS created_earliest,
               COALESCE(r.create_time, p.first_seen) AS created_latest,
               CASE WHEN r.create_time IS NOT NULL THEN 'list' ELSE 'history' END
                   AS created_source,
               p.run_first, p.term_first,
               COALESCE(p.run_before, r.create_time, p.first_prev_export) AS run_earliest,
               COALESCE(p.term_before, r.create_time, p.first_prev_export) AS term_earliest,
               -- the list's updateTime is the end only if it falls where the end can be (a
               -- second of slack: the list has whole seconds)
               CASE WHEN r.update_time IS NOT NULL AND p.term_first IS NOT NULL
                         AND {{seconds_between(r.update_time, p.term_first)}} >= -1
                         AND (COALESCE(p.term_before, r.create_time, p.first_prev_export)
                                  IS NULL
                              OR {{seconds_between(COALESCE(p.term_before, r.create_time,
                                                            p.first_prev_export),
                                                   r.update_time)}} >= -1)
                    THEN 1 ELSE 0 END AS list_end
        FROM (
            -- per run: its first sighting, its first sightings started and finished, and the
            -- last sighting before each (a version's, or the export before it)
            SELECT project_id, run_name, MIN(first_seen) AS first_seen,
                   MAX(CASE WHEN prev_from IS NULL THEN prev_export END) AS first_prev_export,
                   MIN(run_first) AS run_first,
                   MAX(CASE WHEN valid_from = run_first
                            THEN {{later(prev_from, export_seen)}} END) AS run_before,
                   MIN(term_first) AS term_first,
                   MAX(CASE WHEN valid_from = term_first
                            THEN {{later(prev_from, export_seen)}} END) AS term_before
            FROM (
                SELECT h.project_id, h.run_name, h.valid_from,
                       LAG(h.valid_from) OVER (PARTITION BY h.project_id, h.run_name
                                               ORDER BY h.valid_from, h.id) AS prev_from,
                       MIN(h.valid_from) OVER (PARTITION BY h.project_id, h.run_name)
                           AS first_seen,
                       MIN(CASE WHEN h.status IS NOT NULL
                                     AND h.status NOT IN ({{waiting_statuses}})
                                     AND h.status NOT IN ({{terminal_statuses}})
                                THEN h.valid_from END)
                           OVER (PARTITION BY h.project_id, h.run_name) AS run_first,
                       MIN(CASE WHEN h.status IN ({{terminal_statuses}}) THEN h.valid_from END)
                           OVER (PARTITION BY h.project_id, h.run_name) AS term_first,
                       x.prev_export,
                       -- the export before counts as a sighting if the run was known by then
                       CASE WHEN {{seconds_between(MIN(h.valid_from) OVER (
                                                       PARTITION BY h.project_id, h.run_name),
                                                   x.prev_export)}} >= 0
                            THEN x.prev_export END AS export_seen
                FROM {{history}} h
                LEFT JOIN (
                    -- each export's previous complete export (its start)
                    SELECT id, MAX(CASE WHEN status IN ({{batch_succeeded}}, {{batch_partial}})
                                        THEN started_at END)
                                   OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING
                                                              AND 1 PRECEDING) AS prev_export
                    FROM {{batches}}
                    WHERE table_name = {{table_name}} AND command = {{command_export}}
                ) x ON x.id = h.batch_id
                WHERE h.table_name = {{table_name}}
            ) v
            GROUP BY project_id, run_name
        ) p
        -- the history drives, through the runs table's primary key: a join the other way,
        -- onto these per-run rows, has no index on MariaDB (its keys on derived tables cannot
        -- span two 255-character run keys), and took minutes. Every stored run has a history.
        JOIN {{runs}} r ON r.project_id = p.project_id AND r.run_name = p.run_name
    ) b
) t
