"""The shared Stripe budget's statements on its ``stripe_budget`` row (``shared_budget.py``).

Apart from the pacer so that each file has one job: these say what a booking
and a 429 do to the account's schedule; ``SharedBudget`` says when a process
books and how it spends what it booked.
"""

from __future__ import annotations

import sqlalchemy as sa


def effective_rate_sql(now: str) -> str:
    # The rate after a 429: rate_factor, climbing back linearly once the pause ends.
    return (
        f"(:rate * least(1.0, rate_factor + :recovery * greatest(0.0,"
        f" extract(epoch FROM {now} - greatest(rate_factor_at, paused_until)))))"
    )


BOOK_SQL = sa.text(
    f"""
    WITH cur AS (
        SELECT account_key, clock_timestamp() AS now_at,
               {effective_rate_sql("clock_timestamp()")} AS eff,
               next_slot_at, listing_next_at, paused_until,
               reversal_booked_at > clock_timestamp() - make_interval(secs => :active)
                   AS reversals_active,
               listing_booked_at > clock_timestamp() - make_interval(secs => :active)
                   AS listing_active
        FROM stripe_budget WHERE account_key = :key FOR UPDATE
    ), plan AS (
        SELECT account_key, now_at, eff, reversals_active,
               -- Reversals leave the floor free while listing draws: no overlap.
               eff * CASE WHEN listing_active OR :listing THEN 1.0 - :floor ELSE 1.0 END
                   AS reversal_eff,
               greatest(next_slot_at, paused_until,
                        now_at - make_interval(secs => :tolerance)) AS global_start,
               CASE WHEN :listing AND reversals_active
                    THEN greatest(listing_next_at, paused_until,
                                  now_at - make_interval(secs => :tolerance))
                    ELSE greatest(next_slot_at, paused_until,
                                  now_at - make_interval(secs => :tolerance))
               END AS start_at
        FROM cur
    ), booked AS (
        UPDATE stripe_budget b SET
            -- Listing on its floor schedule does not move the shared one: the
            -- reversals' reduced rate is what leaves room for it.
            next_slot_at = CASE
                WHEN NOT :listing
                    THEN plan.global_start + make_interval(secs => :k / plan.reversal_eff)
                WHEN plan.reversals_active THEN b.next_slot_at
                ELSE plan.global_start + make_interval(secs => :k / plan.eff) END,
            listing_next_at = CASE WHEN :listing
                THEN plan.start_at + make_interval(secs => 1.0 / (plan.eff * :floor))
                ELSE b.listing_next_at END,
            reversal_booked_at = CASE WHEN :listing THEN b.reversal_booked_at ELSE plan.now_at END,
            listing_booked_at = CASE WHEN :listing THEN plan.now_at ELSE b.listing_booked_at END,
            requests_per_second = :rate,
            updated_at = plan.now_at
        FROM plan WHERE b.account_key = plan.account_key
        RETURNING extract(epoch FROM plan.start_at - plan.now_at) AS start_in,
                  extract(epoch FROM plan.now_at) AS now_epoch,
                  CASE WHEN :listing THEN plan.eff ELSE plan.reversal_eff END AS eff
    ), seen AS (
        INSERT INTO stripe_budget_holders AS h
            (account_key, holder_id, description, granted_total, granted_listing, waited_seconds)
        SELECT :key, :holder, :description, :k, CASE WHEN :listing THEN :k ELSE 0 END, :waited
        FROM booked
        ON CONFLICT (account_key, holder_id) DO UPDATE SET
            granted_total = h.granted_total + excluded.granted_total,
            granted_listing = h.granted_listing + excluded.granted_listing,
            waited_seconds = h.waited_seconds + excluded.waited_seconds,
            last_seen_at = clock_timestamp()
    )
    SELECT start_in, now_epoch, eff FROM booked
    """
)

CREATE_ROW_SQL = sa.text(
    """
    INSERT INTO stripe_budget (account_key, requests_per_second, next_slot_at, listing_next_at,
                               paused_until, rate_factor_at, reversal_booked_at,
                               listing_booked_at)
    VALUES (:key, :rate, now(), now(), now(), now(), 'epoch', 'epoch')
    ON CONFLICT (account_key) DO NOTHING
    """
)

# A 429 outside a pause repeats one seen within ``repeat_within`` when the last burst
# (``rate_factor_at``, set as each burst begins) is that recent; one that does not is
# lone, answered lightly (TokenBucket explains why). ``rate_limited_total > 0`` keeps a
# new row's creation time from passing for a burst.
REPEATED = (
    "(rate_limited_total > 0 AND clock_timestamp() - rate_factor_at"
    " < make_interval(secs => :repeat_within))"
)

PENALIZE_SQL = sa.text(
    f"""
    UPDATE stripe_budget SET
        rate_factor = CASE WHEN paused_until > clock_timestamp() THEN rate_factor
            ELSE greatest(:min_factor, {effective_rate_sql("clock_timestamp()")} / :rate
                          * CASE WHEN {REPEATED} THEN :decrease ELSE :lone_decrease END) END,
        rate_factor_at = CASE WHEN paused_until > clock_timestamp() THEN rate_factor_at
            ELSE clock_timestamp() END,
        paused_until = greatest(paused_until, clock_timestamp() + make_interval(secs =>
            CASE WHEN paused_until <= clock_timestamp() AND {REPEATED} THEN :pause
                 ELSE :lone_pause END)),
        rate_limited_total = rate_limited_total + 1,
        updated_at = clock_timestamp()
    WHERE account_key = :key
    """
)
