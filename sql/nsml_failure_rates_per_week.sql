-- Question: which images, GPU servers and creators fail most, week by week (failed / finished)?
-- One row per dimension ('image': image_path, 'gpu_server': eng_full_name, 'creator'), value and
-- week the run ended (its estimated end, see nsml_run_timeline). Finished: any terminal status;
-- failed: RUN_STATE_FAILED. Runs gone upstream unfinished are neither.
SELECT d.dimension,
       CASE d.dimension WHEN 'image' THEN t.image_path WHEN 'gpu_server' THEN t.eng_full_name
            ELSE t.creator END AS value,
       t.week, COUNT(*) AS finished, SUM(t.failed) AS failed,
       ROUND(1.0 * SUM(t.failed) / COUNT(*), 4) AS failure_rate
FROM (
    SELECT image_path, eng_full_name, creator, {{week_start(ended_at)}} AS week,
           CASE WHEN final_status = {{run_failed}} THEN 1 ELSE 0 END AS failed
    FROM ({{include(nsml_run_timeline)}}) tl
    WHERE finished = 1 AND ended_at IS NOT NULL
) t
-- each run once per dimension, from one pass over the timeline
CROSS JOIN (SELECT 'image' AS dimension UNION ALL SELECT 'gpu_server'
            UNION ALL SELECT 'creator') d
GROUP BY d.dimension,
         CASE d.dimension WHEN 'image' THEN t.image_path WHEN 'gpu_server' THEN t.eng_full_name
              ELSE t.creator END,
         t.week
