-- Question: which images, GPU servers and creators fail most, week by week (failed / finished)?
-- One row per dimension ('image': image_path, 'gpu_server': eng_full_name, 'creator'), value and
-- week the run ended (its estimated end, see nsml_run_timeline). Finished: any terminal status;
-- failed: RUN_STATE_FAILED. Runs gone upstream unfinished are neither.
WITH ended AS (
    SELECT image_path, eng_full_name, creator, {{week_start(ended_at)}} AS week,
           CASE WHEN final_status = 'RUN_STATE_FAILED' THEN 1 ELSE 0 END AS failed
    FROM ({{include(nsml_run_timeline)}}) t
    WHERE finished = 1 AND ended_at IS NOT NULL
)
SELECT 'image' AS dimension, image_path AS value, week, COUNT(*) AS finished,
       SUM(failed) AS failed, ROUND(1.0 * SUM(failed) / COUNT(*), 4) AS failure_rate
FROM ended GROUP BY image_path, week
UNION ALL
SELECT 'gpu_server', eng_full_name, week, COUNT(*), SUM(failed),
       ROUND(1.0 * SUM(failed) / COUNT(*), 4)
FROM ended GROUP BY eng_full_name, week
UNION ALL
SELECT 'creator', creator, week, COUNT(*), SUM(failed), ROUND(1.0 * SUM(failed) / COUNT(*), 4)
FROM ended GROUP BY creator, week
