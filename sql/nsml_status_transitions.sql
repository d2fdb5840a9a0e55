-- Question: when did each run change status (e.g. run 42 from IN_PROGRESS to FAILED)?
SELECT project_id, run_name, previous_status, status, changed_at, batch_id
FROM (
    SELECT project_id, run_name, status, batch_id, valid_from AS changed_at,
           LAG(status) OVER (PARTITION BY project_id, run_name ORDER BY valid_from, id)
               AS previous_status,
           ROW_NUMBER() OVER (PARTITION BY project_id, run_name ORDER BY valid_from, id)
               AS version
    FROM {{history}}
    WHERE table_name = {{table_name}}
) versions
WHERE version > 1 AND (previous_status <> status
                       OR (previous_status IS NULL) <> (status IS NULL))
