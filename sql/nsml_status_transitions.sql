-- Question: when did each run change status (e.g. run 42 of project "vision" from IN_PROGRESS to FAILED)?
SELECT v.project_id, r.project_name, v.run_name, v.previous_status, v.status, v.changed_at,
       v.batch_id
FROM (
    SELECT project_id, run_name, status, batch_id, valid_from AS changed_at,
           LAG(status) OVER (PARTITION BY project_id, run_name ORDER BY valid_from, id)
               AS previous_status,
           ROW_NUMBER() OVER (PARTITION BY project_id, run_name ORDER BY valid_from, id)
               AS version
    FROM {{history}}
    WHERE table_name = {{table_name}}
) v
-- the name as the run has it now (the history keeps a version's columns only once closed)
LEFT JOIN {{runs}} r ON r.project_id = v.project_id AND r.run_name = v.run_name
WHERE v.version > 1 AND (v.previous_status <> v.status
                         OR (v.previous_status IS NULL) <> (v.status IS NULL))
