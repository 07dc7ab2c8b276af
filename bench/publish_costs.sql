-- Fan-out variants for bench/publish_costs.py, installed on the throwaway bench server only:
-- what a publish costs with less than pgmsg's fan-out, and with its fan-out before 031.
-- Each is a trigger on messages, created disabled; the script enables one set at a time.

-- A bare row trigger: the deliveries of one message, nothing else.
CREATE OR REPLACE FUNCTION bench_row_fan_out() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path TO public, pg_temp AS $$
BEGIN
    INSERT INTO message_delivery (message_id, subscription_id, client_id, delivery_mode, status, message_key)
    SELECT NEW.id, s.id, s.client_id, s.delivery_mode, 'pending', CASE WHEN s.ordered THEN NEW.message_key END
      FROM subscriptions s
     WHERE s.active AND pgmsg_matches(s.message_type, NEW.message_type) AND pgmsg_matches(s.namespace, NEW.namespace);
    RETURN NULL;
END $$;
-- The same as a statement trigger over the transition table.
CREATE OR REPLACE FUNCTION bench_statement_fan_out() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path TO public, pg_temp AS $$
BEGIN
    INSERT INTO message_delivery (message_id, subscription_id, client_id, delivery_mode, status, message_key)
    SELECT m.id, s.id, s.client_id, s.delivery_mode, 'pending', CASE WHEN s.ordered THEN m.message_key END
      FROM new_messages m JOIN subscriptions s
        ON s.active AND pgmsg_matches(s.message_type, m.message_type) AND pgmsg_matches(s.namespace, m.namespace);
    RETURN NULL;
END $$;
-- The same, plus one wake-up NOTIFY per subscriber's client (as pgmsg's fan-out sends).
CREATE OR REPLACE FUNCTION bench_statement_fan_out_wakeups() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path TO public, pg_temp AS $$
DECLARE v_clients text[]; v_client text;
BEGIN
    WITH created AS (
    INSERT INTO message_delivery (message_id, subscription_id, client_id, delivery_mode, status, message_key)
    SELECT m.id, s.id, s.client_id, s.delivery_mode, 'pending', CASE WHEN s.ordered THEN m.message_key END
      FROM new_messages m JOIN subscriptions s
        ON s.active AND pgmsg_matches(s.message_type, m.message_type) AND pgmsg_matches(s.namespace, m.namespace)
    RETURNING client_id)
    SELECT array_agg(DISTINCT client_id) INTO v_clients FROM created;
    FOREACH v_client IN ARRAY coalesce(v_clients, '{}') LOOP
        PERFORM pg_notify('pgmsg_deliveries', v_client);
    END LOOP;
    RETURN NULL;
END $$;
-- pgmsg_fan_out as it was before 031 (every subscription compared with every message).
CREATE OR REPLACE FUNCTION bench_before_031_fan_out() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'public', 'pg_temp'
    AS $$
DECLARE
    v_sync           bigint[];
    v_dispatched     bigint[];
    v_notify         bigint[];
    v_notify_message bigint[];
    v_notify_sub     bigint[];
    v_clients        text[];
    v_id             bigint;
    v_client         text;
BEGIN
    WITH created AS (
        INSERT INTO message_delivery (message_id, subscription_id, client_id, delivery_mode,
                                      status, delivered_at, notified_at, message_key)
        SELECT m.id, s.id, s.client_id, s.delivery_mode,
               CASE WHEN s.delivery_mode = 'notify' AND NOT s.durable THEN 'notified' ELSE 'pending' END,
               CASE WHEN s.delivery_mode = 'notify' AND NOT s.durable THEN now() END,
               CASE WHEN s.delivery_mode = 'notify' THEN now() END,
               CASE WHEN s.ordered THEN m.message_key END
          FROM new_messages m
          JOIN subscriptions s
            ON s.active
           AND pgmsg_matches(s.message_type, m.message_type)
           AND pgmsg_matches(s.namespace, m.namespace)
           AND (s.payload_filter IS NULL OR m.payload @> s.payload_filter)
         ORDER BY m.id, s.id
        RETURNING id, message_id, subscription_id, client_id, delivery_mode, status
    ), described AS (
        SELECT c.*, s.push_mode
          FROM created c
          LEFT JOIN subscriptions s ON c.delivery_mode = 'http' AND s.id = c.subscription_id
    )
    SELECT array_agg(c.id ORDER BY c.id) FILTER (WHERE c.push_mode = 'in_transaction'),
           array_agg(DISTINCT c.subscription_id) FILTER (WHERE c.push_mode = 'dispatcher'),
           array_agg(c.id ORDER BY c.id) FILTER (WHERE c.delivery_mode = 'notify'),
           array_agg(c.message_id ORDER BY c.id) FILTER (WHERE c.delivery_mode = 'notify'),
           array_agg(c.subscription_id ORDER BY c.id) FILTER (WHERE c.delivery_mode = 'notify'),
           -- async deliveries, and durable NOTIFY ones (pending until acked)
           array_agg(DISTINCT c.client_id) FILTER (WHERE c.delivery_mode = 'async' OR c.status = 'pending'
                                                               AND c.delivery_mode = 'notify')
      INTO v_sync, v_dispatched, v_notify, v_notify_message, v_notify_sub, v_clients
      FROM described c;

    IF v_notify IS NOT NULL THEN
        PERFORM pg_notify(s.notify_channel, pgmsg_notify_payload(m, n.delivery_id))
           FROM unnest(v_notify, v_notify_message, v_notify_sub) AS n(delivery_id, message_id, subscription_id)
           JOIN subscriptions s ON s.id = n.subscription_id
           JOIN new_messages m ON m.id = n.message_id
          ORDER BY n.delivery_id;
    END IF;
    -- Wake idle consumers (one notification per client; NOTIFY folds duplicates
    -- within a transaction) and the HTTP dispatcher: only for a subscription
    -- none of whose deliveries is being pushed under a live lease (above).
    FOREACH v_client IN ARRAY coalesce(v_clients, '{}') LOOP
        PERFORM pg_notify('pgmsg_deliveries', v_client);
    END LOOP;
    IF v_dispatched IS NOT NULL AND EXISTS (
           SELECT 1 FROM subscriptions s
            WHERE s.id = ANY (v_dispatched)
              AND NOT EXISTS (
                  SELECT 1 FROM message_delivery e
                   WHERE e.client_id = s.client_id AND e.status = 'processing'
                     AND e.lease_expires_at > now()
                     AND e.subscription_id = s.id AND e.delivery_mode = 'http')) THEN
        PERFORM pg_notify('pgmsg_http', '');
    END IF;

    -- The seed's synchronous push, for subscriptions that ask for it.
    FOREACH v_id IN ARRAY coalesce(v_sync, '{}') LOOP
        PERFORM pgmsg_push_http(v_id);
    END LOOP;
    RETURN NULL;
END;
$$;


CREATE TRIGGER bench_row AFTER INSERT ON messages
    FOR EACH ROW EXECUTE FUNCTION bench_row_fan_out();
CREATE TRIGGER bench_statement AFTER INSERT ON messages REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION bench_statement_fan_out();
CREATE TRIGGER bench_statement_wakeups AFTER INSERT ON messages REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION bench_statement_fan_out_wakeups();
CREATE TRIGGER bench_before_031 AFTER INSERT ON messages REFERENCING NEW TABLE AS new_messages
    FOR EACH STATEMENT EXECUTE FUNCTION bench_before_031_fan_out();
ALTER TABLE messages DISABLE TRIGGER bench_row;
ALTER TABLE messages DISABLE TRIGGER bench_statement;
ALTER TABLE messages DISABLE TRIGGER bench_statement_wakeups;
ALTER TABLE messages DISABLE TRIGGER bench_before_031;
