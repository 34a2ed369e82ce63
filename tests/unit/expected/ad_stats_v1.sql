SELECT
  `ad_id`,
  CAST(window_start AS TIMESTAMP_LTZ(3)) AS tile_start,
  CAST(window_end AS TIMESTAMP_LTZ(3)) AS tile_end,
  window_time AS tile_time,
  CAST(TIMESTAMPDIFF(MINUTE, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 60000 AS tile_start_ms,
  COUNT(*) AS events,
  COUNT(*) FILTER (WHERE event_type = 'impression') AS `impressions`,
  COUNT(*) FILTER (WHERE event_type = 'click') AS `clicks`,
  COUNT(*) AS `billed`,
  COALESCE(SUM(CAST(`cost` AS DOUBLE)), CAST(0 AS DOUBLE)) AS `spend`
FROM TABLE(TUMBLE(TABLE `ad_stats_v1_events`, DESCRIPTOR(`event_time`), INTERVAL '1' DAY(2)))
WHERE `ad_id` IS NOT NULL AND CHAR_LENGTH(`ad_id`) > 0
GROUP BY `ad_id`, window_start, window_end, window_time;

SELECT
  CAST(window_start AS TIMESTAMP_LTZ(3)) AS tile_start,
  CAST(window_end AS TIMESTAMP_LTZ(3)) AS tile_end,
  CAST(TIMESTAMPDIFF(MINUTE, TIMESTAMP '1970-01-01 00:00:00', window_end) AS BIGINT) * 60000 AS tile_end_ms,
  COUNT(*) AS entities,
  SUM(events) AS events
FROM TABLE(TUMBLE(TABLE `ad_stats_v1_tiles`, DESCRIPTOR(tile_time), INTERVAL '1' DAY(2)))
GROUP BY window_start, window_end;
