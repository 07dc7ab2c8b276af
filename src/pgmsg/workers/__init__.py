"""The workers pgmsg runs beside the database: the HTTP dispatcher and the fan-out worker.

- pgmsg.workers.dispatcher: claims due HTTP deliveries and schedules their pushes
  (pgmsg-dispatcher), with pgmsg.workers.pushing (one push) and
  pgmsg.workers.recording (writing the attempts);
- pgmsg.workers.fan_out: moves deferred messages into messages (pgmsg-fan-out).

Both start through pgmsg.runtime, as the sample services do.
"""
