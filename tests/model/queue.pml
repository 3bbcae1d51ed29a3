/*
 * queue.pml: a Promela model of one ioq queue's state word and of the
 * dispatch / completion / cancellation protocol that runs on it
 * (runtime/queue/state.hpp, queue.cpp, request.cpp, device.cpp cancel_impl).
 *
 * Checked with spin by tests/model/run_spin.sh (ctest label `spin`).
 *
 * WHAT IS MODELLED
 *   * The queue state word QueueImpl::st_ (state.hpp): the counts Q (queued),
 *     D (driver-owned), I (inserters in flight), X (threads in the dispatch
 *     loop), the pop token O, and the flags Accept, Dispatch, Latch (cancel
 *     dispatched requests), Events, IdleArmed, PurgeArmed. It is one int `st`;
 *     each compare-exchange / fetch-op of the C++ is one atomic step here, and
 *     a compare-exchange against a value read earlier is modelled as such
 *     (it compares the whole word: `st == s`).
 *   * QueueImpl's other atomics that the dispatch decision reads: purge_mode_
 *     and cancel_scan_ (separate variables, read in separate steps, as in C++).
 *   * Each request's state word (rs:: in state.hpp): where it is (new, queued,
 *     owned, completing; `DONE` stands for the slab slot released with a new
 *     generation) and the flags canceled, cancelable, cancel-callback-scheduled,
 *     presented.
 *   * The inbox ring (MpmcRing): tickets claimed and published in two steps, so
 *     a pop can find an unpublished head (the `blocked_at` path of the loop);
 *     the token-protected FIFO filled by drain_inbox_locked(); the event list
 *     (cancel callbacks, under events_mu_).
 *   * Functions (each step is commented with the C++ function it models):
 *     update() / work_for(), release_driver() (incl. the deferred releases of an
 *     unlimited parallel queue, t_defer / `pending`), arrive() (fast path and
 *     slow path), insert_counted(), recheck_canceled(), run_loop_with(),
 *     pop_locked(), claim_popped(), run_events(), push_event(),
 *     take_all_queued_locked(), dispose_list(), cancel_queued(),
 *     cancel_cancelable_owned(), start_impl(), stop_impl() (stop and
 *     stop_and_purge), drain_impl() (drain and purge), DeviceImpl::cancel_impl(),
 *     do_complete() / finish_owned() / finish_packet(), mark_cancelable(),
 *     unmark_cancelable().
 *   * Threads: submitters (Device::submit), a driver thread that completes the
 *     requests its handlers kept (or marks them cancelable and waits for the
 *     cancel), a canceller (Device::cancel, the OS), a controller (start,
 *     stop, stop_and_purge, drain, purge, each with a callback). Any of them
 *     may end up running the dispatch loop, as in ioq; handlers run inside the
 *     loop on whichever thread runs it, and complete inline, keep the request
 *     for the driver thread, or mark it cancelable.
 *
 * WHAT IS ABSTRACTED AWAY
 *   * Memory ordering: the model is sequentially consistent. (The C++ uses
 *     acq_rel read-modify-writes on st_ throughout; the inserter/canceller
 *     handshake relies on the seq_cst CAS in cancel_impl, see recheck_canceled.)
 *   * Spurious failures of compare_exchange_weak (they only retry).
 *   * Spinning: a wait for the pop token (take_token, the loop's backoff on
 *     kToken) or for a claimed inbox ticket to be published blocks until the
 *     word changes: a reload that finds the same word decides the same. So a
 *     thread that could only spin for ever is a blocked thread to spin.
 *   * Power (PnpHeld, Barrier, stop/resume notifications), removal/shutdown,
 *     manual queues (ReadyNotify, retrieve, find, requeue and its stash),
 *     forward_to_queue and the canceled-on-queue callback (a request can only
 *     come back to a queue after being presented through those, so every
 *     queued request here is unpresented), file cleanup, forward progress,
 *     per-core shards / home cores / passive execution (enter_loop() runs the
 *     loop on the calling thread), batch submission, zero-length completion,
 *     counters, generations (no slot is reused: NREQ distinct requests).
 *   * The FIFO's order is kept (pop takes the oldest ticket); the event list is
 *     a set (its order does not matter to the properties).
 *   * Callbacks (handlers, idle/purge callbacks, cancel callbacks) do not call
 *     back into the queue except as described (handlers complete or mark
 *     cancelable; cancel callbacks complete). A handler returns one step after
 *     its last action (`hrun`), so "no handler running" is observable.
 *   * stop_impl/drain_impl: the slot-busy check, the slot write and the CAS
 *     that arms the callback are one step (under control_; nothing reads the
 *     slot before the armed bit is set, and only the control path sets it).
 *     cancel_cancelable_owned() marks all cancelable requests in one step,
 *     then schedules their callbacks one by one.
 *
 * CONFIGURATION (spin -D...)
 *   NREQ=2|3       requests (default 3)
 *   LIMIT=n        most driver-owned before delivery stops: 1 sequential,
 *                  2 parallel with max_presented 2, 15 unlimited (default 1)
 *   DEFER          unlimited parallel queue: defer_release_ (t_defer/pending)
 *   NSUB=1|2       submitter threads (default 2)
 *   NOPS=n         controller operations (default 2)
 *   OPS=mask       which: 1 start, 2 stop, 4 stop_and_purge, 8 drain,
 *                  16 purge (default 31)
 *   NCANCEL=n      most Device::cancel calls (default 1)
 *   NO_CANCELABLE  handlers never mark requests cancelable
 *
 * FIXES (spin -D...): without a switch the model follows the code as it was;
 * each switch models the fix runtime/queue now has (run_spin.sh sets them all).
 *   FIX_FAST_PATH_CAS  arrive()'s fast path makes the request driver-owned
 *                      with a relaxed load and a plain store of its word. The
 *                      handle is published by bind(), so a Device::cancel
 *                      between the two sets kCanceled and the store drops it:
 *                      the request is delivered uncanceled, cancel() returned
 *                      success, and a handler that marks it cancelable waits
 *                      for a cancel that never comes (spec 5.2 wants it
 *                      delivered with IsCanceled true). Fix: a CAS loop (as on
 *                      the slow path), also in arrive_batch().
 *   FIX_BLOCKED_AT     run_loop_with(): a pop that finds the inbox head
 *                      unpublished undoes its reservation and sets blocked_at
 *                      to the word after the undo. If that head's producer
 *                      published and ran its update(-I) in between, it did not
 *                      enter the loop (the reservation had D at the limit), and
 *                      the loop, finding s == blocked_at, leaves: requests stay
 *                      queued with nobody dispatching (sequential queues and
 *                      max_presented queues; found with three requests and two
 *                      submitters). Fix: blocked_at = v, the word before the
 *                      reservation, so any change during the pop means retry.
 *   FIX_MARK_RECHECK   mark_cancelable reads latch_set(), then CASes
 *                      kCancelable into the request word; stop_and_purge and
 *                      purge set kLatch, then scan for cancelable requests. A
 *                      mark whose latch read precedes the latch and whose CAS
 *                      follows the scan leaves the request cancelable with the
 *                      latch set: its cancel callback never runs and the
 *                      stop/purge callback waits for it (the spec: MarkCancelable
 *                      while the latch is set acts as if canceled). Fix: after
 *                      the CAS, read the latch again (seq_cst on both sides:
 *                      the latch CAS then the scan's load, the mark's CAS then
 *                      its latch load) and, if set, CAS kCancelable ->
 *                      kCanceled|kCancelCb and schedule the callback (whoever
 *                      wins that CAS schedules it).
 *   FIX_PURGE_POP      run_loop_with() pops while purge_mode_ is set even
 *                      when D is at the limit (the popped request is only to
 *                      be cancelled), then claim_popped() reads purge_mode_
 *                      again. A start (or stop) that clears the mode between
 *                      the two reads makes claim_popped deliver it: a second
 *                      driver-owned request on a sequential queue (the soak
 *                      test's ledger caught it; present()'s assertion here).
 *                      Fix: the mode is read once, with the pop token held,
 *                      and claim_popped decides by that value; a request
 *                      taken only for a purge that has ended goes back to the
 *                      head of the FIFO and the reservation is undone.
 *
 * PROTOCOL SWITCH (run_spin.sh always sets it; without it, bind() publishes)
 *   PUBLISH_LATE       bind() leaves the handle unpublished; arrive()'s fast
 *                      path stores the word (owned|presented, plain) and then
 *                      publishes, so no canceller can interleave; any other
 *                      path publishes before it reserves. Publishing before
 *                      the store brings FIX_FAST_PATH_CAS's defect back (the
 *                      cancel-unlimited configuration finds it).
 *
 * PROPERTIES (checked by run_spin.sh)
 *   When no thread can move (spin `timeout`), process init checks:
 *   1 no lost wake-up: no event pending, and nothing a thread entering the
 *     loop would deliver: no request is poppable while dispatching is allowed
 *     and D is under the limit, or while the queue purges;
 *   2 exactly-once idle and purge callbacks: at firing, the callback is armed
 *     (fired < armed), its slot is this arming's, and its condition holds (idle:
 *     D == 0 and no handler running; purge: also Q == 0 and I == 0); at
 *     quiescence each arming has fired or is still armed with its condition
 *     false;
 *   3 no deadlock: quiescence with the pop token held, a thread in the loop or
 *     an insert in flight leaves init blocked, and spin reports an invalid end
 *     state (so does a thread stuck anywhere);
 *   4 exactly-once completion: finish_packet asserts the packet's callback has
 *     not run before; the driver and the cancel callbacks complete only
 *     requests they own (request.cpp check_owned, asserted); a cancel callback
 *     is scheduled at most once; at quiescence every request is completed, or
 *     queued and not canceled (a cancel that succeeded took effect), or owned
 *     by a driver that waits for its cancel, cancelable, not canceled and the
 *     latch clear; Q and D count exactly those.
 *   Monitor checks in every state that the counts stay within bounds (an
 *   underflow shows as a count above NREQ). run_spin.sh also runs one
 *   configuration for non-progress cycles (pan -l, weak fairness): no run in
 *   which threads spin for ever without the system moving on.
 */

#ifndef NREQ
#define NREQ 3
#endif
#ifndef LIMIT
#define LIMIT 1
#endif
#ifndef NSUB
#define NSUB 2
#endif
#ifndef NOPS
#define NOPS 2
#endif
#ifndef NCANCEL
#define NCANCEL 1
#endif
#ifndef NO_CANCELABLE
#define CANCELABLE 1
#endif
#ifndef OPS
#define OPS 31
#endif


#define NONE 255

/* ---- the queue state word (state.hpp; fields narrowed to 4 bits) ---- */
#define Q1 1
#define D1 16
#define I1 256
#define X1 4096
#define TOKEN 65536
#define ACCEPT (1 << 17)
#define DISPATCH (1 << 18)
#define LATCH (1 << 19)
#define EVENTS (1 << 20)
#define IDLEARMED (1 << 21)
#define PURGEARMED (1 << 22)

#define QC(s) ((s) & 15)
#define DC(s) (((s) >> 4) & 15)
#define IC(s) (((s) >> 8) & 15)
#define XC(s) (((s) >> 12) & 15)
/* qs::poppable(s) > 0 */
#define POPPABLE(s) (QC(s) > IC(s))
/* qs::can_dispatch (no PnpHeld/Barrier in the model) */
#define CAN_DISPATCH(s) (((s) & DISPATCH) != 0)
/* QueueImpl::work_for(s, x_self); pm is the value read from purge_mode_ */
#define WORK_FOR(s, xs, pm) ( \
  (((s) & EVENTS) != 0) || \
  (((s) & IDLEARMED) != 0 && DC(s) == 0 && XC(s) == (xs)) || \
  (((s) & PURGEARMED) != 0 && DC(s) == 0 && QC(s) == 0 && IC(s) == 0 && XC(s) == (xs)) || \
  (POPPABLE(s) && (pm)) || \
  (CAN_DISPATCH(s) && POPPABLE(s) && DC(s) < LIMIT))

/* ---- the request state word (rs:: in state.hpp) ---- */
#define UNBOUND 0     /* no handle yet (before DeviceImpl::bind) */
#define NEW 1         /* rs::kNew */
#define QUEUED 2      /* rs::kQueued */
#define OWNED 3       /* rs::kOwned */
#define COMPLETING 4  /* rs::kCompleting */
#define DONE 5        /* slot released (generation moved on): the handle is stale */
#define RCANCELED 8   /* rs::kCanceled */
#define RCANCELABLE 16 /* rs::kCancelable */
#define RCANCELCB 32  /* rs::kCancelCb */
#define RPRESENTED 64 /* rs::kPresented */
#define WHERE(w) ((w) & 7)
#define WITH_WHERE(w, x) (((w) & ~7) | (x))

/* ---- shared state ---- */
int st = ACCEPT | DISPATCH;  /* QueueImpl::st_ (constructor: Accept | Dispatch) */
bit purge_mode;              /* QueueImpl::purge_mode_ */
bit cancel_scan;             /* QueueImpl::cancel_scan_ */
byte rw[NREQ];               /* each request's slot word */
bit pub[NREQ];               /* its handle is in the packet (Device::cancel can reach it) */
/* the inbox ring: ticket t holds ring_item[t]; published when ring_pub[t] */
byte ring_item[NREQ];
bit ring_pub[NREQ];
byte ring_head;              /* consumed tickets (popped only by the token holder) */
byte ring_tail;              /* claimed tickets */
bit in_fifo[NREQ];           /* RequestImpl::in_fifo: in the token-protected FIFO */
byte evmask;                 /* the event list (cancel callbacks), one bit per request */

/* ---- ghosts (the properties) ---- */
bit done[NREQ];              /* the packet's on_complete has run */
bit evsched[NREQ];           /* a cancel callback was scheduled */
bit held[NREQ];              /* the driver keeps it (its own bookkeeping) */
bit dcancel[NREQ];           /* the driver marked it cancelable */
bit forever[NREQ];           /* ... and waits for the cancel to complete it */
bit cancel_ok[NREQ];         /* Device::cancel took effect on it */
byte idle_arms, idle_fires, purge_arms, purge_fires;
byte hrun;                   /* handlers (and cancel callbacks) running */
byte nowned, kown;           /* scratch for present()'s count (inside one d_step) */
byte idle_slot, purge_slot;  /* which arming the callback slot holds */
byte ncancel;

/* ---- per-thread locals (every thread may run the dispatch loop) ---- */
#define LOOP_LOCALS \
  int s, v, ns, blocked_at; \
  byte pending, tsub, first = NONE, r = NONE, w, lslot, j, tk, tgt, removed, tlist, evl, k, ar, cres, dr; \
  bit in_loop, enter, ok, ok2, pm, purging, ev, idl, prgd, cs, lt, sched, found, tdefer, dlv;

/* ======================================================================== */
/* Steps that only touch the thread's own locals are folded into the atomic
 * step next to them. A scan over the requests whose per-request steps are
 * independent of each other (take_all_queued_locked, for_each_owned in
 * cancel_cancelable_owned, dispose_list's completions) is one step. */

/* QueueImpl::update(add, sub, or, clear, parallel_entry): one CAS loop = one
 * atomic step. work_for() reads purge_mode_ inside the loop, before the CAS
 * that succeeds; modelled as a read just before the atomic step. Sets
 * `enter` when it took a loop slot (X+1): the caller then runs the loop. */
inline update(add, sub, orb, clr, par) {
  pm = purge_mode;
  atomic {
    ns = ((st + (add) - (sub)) | (orb)) & ~(clr);
    if
    :: !in_loop && (XC(ns) == 0 || (par)) && WORK_FOR(ns, 0, pm) -> ns = ns + X1; enter = 1
    :: else -> skip
    fi;
    st = ns;
    ns = 0;
    pm = 0
  }
}

/* QueueImpl::take_token() (CAS loop while kToken is set) / release_token() */
inline take_token() {
  atomic { !(st & TOKEN) -> st = st | TOKEN }
}
inline release_token() {
  atomic { st = st & ~TOKEN }
}

/* DeviceImpl::finish_packet: the slot is released, the packet's callback runs.
 * Property 4: exactly once per request. (Inside an atomic step.) */
#define FINISH_PACKET(rr) \
  assert(!done[rr]); \
  done[rr] = 1; \
  rw[rr] = DONE; \
  held[rr] = 0; \
  dcancel[rr] = 0; \
  forever[rr] = 0

/* QueueImpl::release_driver(kD1): inside a handler of an unlimited parallel
 * queue (t_defer.q == this) the release is left to the loop (`pending`). */
inline release_driver() {
#ifdef DEFER
  if
  :: tdefer -> tsub++
  :: else ->
#endif
    update(0, D1, 0, 0, 0)
#ifdef DEFER
  fi
#endif
}

/* request.cpp do_complete(): check_owned and the CAS OWNED -> COMPLETING
 * (refused while cancelable), then QueueImpl::finish_owned():
 * finish_packet() and release_driver(kD1). The CAS and finish_packet are one
 * step: between them no modelled reader tells COMPLETING from a released
 * slot. The driver model completes only what it owns: the assertion checks
 * the protocol never leads it to complete a request it does not own. */
inline do_complete(rr) {
  atomic {
    assert(WHERE(rw[rr]) == OWNED && !(rw[rr] & RCANCELABLE));
    FINISH_PACKET(rr)
  };
  release_driver()
}

/* QueueImpl::push_event / schedule_cancel_callback: append under events_mu_,
 * then update(0, 0, kEvents, 0, false). */
inline push_event(rr) {
  atomic {
    assert(!evsched[rr]);   /* a request's cancel callback is scheduled once */
    evsched[rr] = 1;
    evmask = evmask | (1 << rr)
  };
  update(0, 0, EVENTS, 0, 0)
}

/* request.cpp mark(): reads latch_set() (st_), then CASes the request word:
 * canceled or latched -> kCanceled|kCancelCb and the cancel callback is
 * scheduled; else kCancelable. The driver keeps the request and either
 * completes it later (after unmark) or waits for the cancel (forever). */
inline mark_cancelable(rr) {
  lt = ((st & LATCH) != 0);
  atomic {
    if
    :: (rw[rr] & RCANCELED) || lt -> rw[rr] = rw[rr] | RCANCELED | RCANCELCB; sched = 1
    :: else -> rw[rr] = rw[rr] | RCANCELABLE
    fi;
    lt = 0;
    held[rr] = 1;
    dcancel[rr] = 1;
    if
    :: forever[rr] = 1
    :: skip
    fi
  };
#ifdef FIX_MARK_RECHECK
  /* kCancelable is published: look at the latch again; set meanwhile, take
   * the request back for the cancel callback (unless someone else did) */
  if
  :: !sched ->
     lt = ((st & LATCH) != 0);
     atomic {
       if
       :: lt && WHERE(rw[rr]) == OWNED && (rw[rr] & RCANCELABLE) ->
          rw[rr] = (rw[rr] & ~RCANCELABLE) | RCANCELED | RCANCELCB; sched = 1
       :: else -> skip
       fi;
       lt = 0
     }
  :: else -> skip
  fi;
#endif
  if
  :: sched -> sched = 0; push_event(rr)
  :: else -> skip
  fi
}

/* QueueImpl::present(): the handler (the driver) gets an owned request. A
 * sequential queue (LIMIT 1) or one with max_presented never has more than
 * LIMIT requests driver-owned once one is presented: the one presented now
 * included. */
inline present(rr) {
  d_step {
    nowned = 0;
    kown = 0;
    do
    :: kown < NREQ -> if :: WHERE(rw[kown]) == OWNED -> nowned++ :: else -> skip fi; kown++
    :: else -> break
    od;
    assert(nowned <= LIMIT);
    nowned = 0;
    kown = 0
  };
  hrun++;
  if
  :: do_complete(rr)                       /* completes it inline */
  :: held[rr] = 1                          /* keeps it; the driver thread completes it */
#ifdef CANCELABLE
  :: mark_cancelable(rr)                   /* marks it cancelable and keeps it */
#endif
  fi;
  hrun--
}

/* run_loop_with()'s deliver lambda: with defer_release_, t_defer collects the
 * releases of completions inside the handler into `pending`. */
inline deliver(rr) {
#ifdef DEFER
  tdefer = 1;
  present(rr);
  atomic { pending = pending + tsub; tdefer = 0; tsub = 0 }
#else
  present(rr)
#endif
}

/* QueueImpl::drain_inbox_locked(): everything claimed so far goes into the
 * FIFO; waits for claimed tickets to be published. Token held. */
inline drain_inbox() {
  tgt = ring_tail;
  do
  :: atomic { ring_head < tgt && ring_pub[ring_head] -> in_fifo[ring_item[ring_head]] = 1; ring_head++ }
  :: atomic { ring_head >= tgt -> tgt = 0; break }
  od
}

/* QueueImpl::pop_locked(): FIFO head (oldest ticket), else the inbox's head if
 * published, else none. Token held. */
inline pop_locked() {
  atomic {
    r = NONE;
    j = 0;
    do
    :: j < ring_head ->
       if
       :: in_fifo[ring_item[j]] -> r = ring_item[j]; in_fifo[r] = 0; break
       :: else -> j++
       fi
    :: else -> break
    od;
    if
    :: r == NONE && ring_head < ring_tail && ring_pub[ring_head] -> r = ring_item[ring_head]; ring_head++
    :: else -> skip
    fi;
    j = 0
  }
}

/* QueueImpl::take_all_queued_locked(only_canceled): token held, inbox
 * drained; each removed request CAS -> COMPLETING|kCanceled (never presented
 * here, so no canceled-on-queue), then one update of Q. The removed ones are
 * collected in tlist for dispose_list(). */
inline take_all_queued(only) {
  atomic {
    j = 0;
    do
    :: j < NREQ ->
       if
       :: in_fifo[j] && (!(only) || (rw[j] & RCANCELED)) ->
          in_fifo[j] = 0;
          assert(WHERE(rw[j]) == QUEUED && !(rw[j] & RPRESENTED));
          rw[j] = WITH_WHERE(rw[j] | RCANCELED, COMPLETING);
          removed++;
          tlist = tlist | (1 << j)
       :: else -> skip
       fi;
       j++
    :: else -> break
    od;
    j = 0
  };
  if
  :: removed > 0 -> atomic { st = st - removed * Q1; removed = 0 }
  :: else -> skip
  fi
}

/* QueueImpl::dispose_list(): finish each packet (cancelled), then kick(). */
inline dispose_list() {
  if
  :: tlist != 0 ->
     atomic {
       j = 0;
       do
       :: j < NREQ ->
          if
          :: tlist & (1 << j) -> FINISH_PACKET(j)
          :: else -> skip
          fi;
          j++
       :: else -> break
       od;
       j = 0;
       tlist = 0
     };
     update(0, 0, 0, 0, 0)            /* kick() */
  :: else -> skip
  fi
}

/* QueueImpl::run_events(): clear kEvents first, then the cancel scan
 * (cancel_scan_.exchange(false)), then the event list; each event here is a
 * cancel callback, in which the driver completes the request. */
inline run_events() {
  atomic { st = st & ~EVENTS };
  atomic { cs = cancel_scan; cancel_scan = 0 };
  if
  :: cs ->
     cs = 0;
     take_token();
     drain_inbox();
     take_all_queued(1);
     release_token();
     dispose_list()
  :: else -> skip
  fi;
  atomic { evl = evmask; evmask = 0; k = 0 };
  do
  :: atomic { k < NREQ && (evl & (1 << k)) -> evl = evl & ~(1 << k); hrun++ };
     do_complete(k);                       /* the cancel callback completes it */
     hrun--
  :: atomic { k < NREQ && !(evl & (1 << k)) -> k++ }
  :: atomic { k >= NREQ -> k = 0; evl = 0; break }
  od
}

/* QueueImpl::claim_popped(): QUEUED -> OWNED|kPresented, or, when canceled
 * or the queue purges (purge_mode_, read before the CAS), COMPLETING and
 * finished cancelled with release_driver(kD1) (the reservation made it
 * driver-owned). ok2: deliver it. */
inline claim_popped(rr) {
#ifndef FIX_PURGE_POP
  pm = purge_mode;
#endif
  atomic {
    assert(WHERE(rw[rr]) == QUEUED);
    if
    :: (rw[rr] & RCANCELED) || pm -> rw[rr] = rw[rr] | RCANCELED; FINISH_PACKET(rr); ok2 = 0
    :: else -> rw[rr] = WITH_WHERE(rw[rr], OWNED) | RPRESENTED; ok2 = 1
    fi;
    pm = 0
  };
  if
  :: !ok2 -> release_driver()
  :: else -> skip
  fi
}

/* run_loop_with()'s decision inputs, computed from the snapshot s: v = s -
 * pending and the three rare-path conditions. (Inside an atomic step.) */
#define DECIDE \
  v = s - pending * D1; \
  ev = ((v & EVENTS) != 0); \
  idl = ((v & IDLEARMED) != 0 && DC(v) == 0 && XC(v) == 1); \
  prgd = ((v & PURGEARMED) != 0 && DC(v) == 0 && QC(v) == 0 && IC(v) == 0 && XC(v) == 1)
#define RELOAD atomic { s = st; DECIDE }

/* QueueImpl::run_loop_with(firsts, n): the dispatch loop. The caller holds a
 * loop slot (X). Decisions are taken on v = s - pending; the loop leaves only
 * through a CAS on the unchanged word s. */
inline run_loop() {
  atomic { in_loop = 1; pending = 0 };  /* LoopScope */
  if
  :: first != NONE -> deliver(first); first = NONE
  :: else -> skip
  fi;
  atomic { blocked_at = -1; s = st; DECIDE };
  do
  :: (ev || idl || prgd) && pending != 0 ->
     /* rare paths work on the real word: apply the deferred releases first */
     atomic { st = st - pending * D1; s = st; pending = 0; DECIDE }
  :: ev && pending == 0 ->
     run_events();
     RELOAD
  :: !ev && idl && pending == 0 ->
     lslot = idle_slot;                    /* const Slot slot = idle_slot_ */
     atomic {
       if
       :: st == s ->
          st = s & ~(IDLEARMED | LATCH);
          assert(lslot == idle_arms);      /* the slot read is this arming's */
          assert(idle_fires < idle_arms);  /* property 2: at most once */
          assert(DC(st) == 0 && hrun == 0); /* driver == 0, no handler running */
          idle_fires++;
          ok = 1
       :: else -> s = st; DECIDE; ok = 0
       fi;
       lslot = 0
     };
     if
     :: ok -> ok = 0; RELOAD               /* slot.fn ran; reload */
     :: else -> skip
     fi
  :: !ev && !idl && prgd && pending == 0 ->
     lslot = purge_slot;
     atomic {
       if
       :: st == s ->
          st = s & ~(PURGEARMED | LATCH);
          assert(lslot == purge_arms);
          assert(purge_fires < purge_arms);
          assert(QC(st) == 0 && DC(st) == 0 && IC(st) == 0 && hrun == 0);
          purge_fires++;
          ok = 1
       :: else -> s = st; DECIDE; ok = 0
       fi;
       lslot = 0
     };
     if
     :: ok -> ok = 0; RELOAD
     :: else -> skip
     fi
  :: !ev && !idl && !prgd ->
     purging = purge_mode;
     if
     :: POPPABLE(v) && s != blocked_at && (purging || (CAN_DISPATCH(v) && DC(v) < LIMIT)) ->
        purging = 0;
        if
        :: (v & TOKEN) ->
           /* backoff.pause(); reload: a reload that finds the same word
            * decides the same, so this waits until the word changes */
           atomic { st != s -> s = st; DECIDE }
        :: else ->
           /* reserve one queued request as driver-owned, take the pop token,
            * apply the deferred releases */
           atomic {
             if
             :: st == s ->
#ifdef FIX_PURGE_POP
                dlv = (CAN_DISPATCH(v) && DC(v) < LIMIT);   /* `deliverable` */
#endif
                st = v - Q1 + D1 + TOKEN; ok = 1; pending = 0
             :: else -> s = st; DECIDE; ok = 0
             fi
           };
           if
           :: ok ->
              ok = 0;
              pop_locked();
              if
              :: r == NONE ->
                 /* the inbox head is unpublished: undo; "its producer's own
                  * update will bring us (or another thread) back" */
                 atomic {
                   st = st - D1 - TOKEN + Q1; s = st; dlv = 0;
#ifdef FIX_BLOCKED_AT
                   blocked_at = v;         /* the word before the reservation */
#else
                   blocked_at = s;
#endif
                   DECIDE
                 }
              :: else ->
#ifdef FIX_PURGE_POP
                 pm = purge_mode;          /* once, under the token */
                 atomic {
                   if
                   :: !dlv && !pm && !(rw[r] & RCANCELED) ->
                      /* the purge ended: back to the head, undo */
                      in_fifo[r] = 1; r = NONE;
                      st = st - D1 - TOKEN + Q1; s = st; DECIDE
                   :: else -> skip
                   fi;
                   dlv = 0
                 };
                 if
                 :: r == NONE -> skip
                 :: else ->
#endif
                 release_token();
                 claim_popped(r);
                 if
                 :: ok2 -> ok2 = 0; deliver(r)
                 :: else -> skip
                 fi;
                 r = NONE;
                 RELOAD
#ifdef FIX_PURGE_POP
                 fi
#endif
              fi
           :: else -> skip
           fi
        fi
     :: else ->
        purging = 0;
        /* nothing for this thread: leave, unless the word changed */
        atomic {
          if
          :: st == s -> st = v - X1; ok = 1
          :: else -> s = st; DECIDE; ok = 0
          fi
        };
        if
        :: ok -> break
        :: else -> skip
        fi
     fi
  od;
  atomic {
    ok = 0; in_loop = 0; pending = 0; blocked_at = 0; s = 0; v = 0;
    ev = 0; idl = 0; prgd = 0
  }
}

/* QueueImpl::insert_counted(): push into the inbox (claim a ticket, then
 * publish), update(0, kI1, 0, 0, parallel_entry = true), recheck_canceled(). */
inline insert_counted(rr) {
  atomic { tk = ring_tail; ring_item[tk] = rr; ring_tail++ };   /* try_push: claim */
  atomic { ring_pub[tk] = 1; tk = 0 };                         /* publish */
  update(0, I1, 0, 0, 1);
  /* recheck_canceled(): canceled while on its way in: make sure someone removes it */
  if
  :: WHERE(rw[rr]) == QUEUED && (rw[rr] & RCANCELED) ->
     cancel_scan = 1;
     update(0, 0, EVENTS, 0, 0)
  :: else -> skip
  fi
}

/* QueueImpl::insert_counted() with the pop token held (Hold::token): an inbox
 * with no ticket left to consume (claimed == consumed) means r goes straight to
 * the FIFO's tail; else r is pushed behind the inbox's requests. Then the token
 * is released by update(0, 0, 0, kToken, parallel_entry = true). The emptiness
 * check and the append are one step here: only token holders look at the FIFO,
 * and a ticket claimed between the two is popped after r in the code as in the
 * model. No recheck_canceled(): a canceller takes the token to look for r, so
 * it finds r in place. */
inline insert_token(rr) {
  atomic {
    tk = ring_tail; ring_item[tk] = rr; ring_tail++;
    if
    :: ring_head + 1 == ring_tail ->                         /* inbox empty: into the FIFO */
       ring_pub[tk] = 1; ring_head++; in_fifo[rr] = 1; tk = 0; ok = 1
    :: else -> ok = 0                                         /* try_push: claim */
    fi
  };
  if
  :: !ok -> atomic { ring_pub[tk] = 1; tk = 0 }              /* publish */
  :: else -> ok = 0
  fi;
  update(0, 0, 0, TOKEN, 1)
}

/* QueueImpl::arrive() for a thread not in the loop of this queue (fast_ok).
 * PUBLISH_LATE: arrive(r, published = false) first. Its fast path takes the
 * slots with the handle unpublished, stores the word (plain) and then
 * publishes; any other path publishes and decides again (the code below). */
inline arrive(rr) {
#ifdef PUBLISH_LATE
  atomic {
    if
    :: (st & ACCEPT) && CAN_DISPATCH(st) && !(st & (EVENTS | IDLEARMED | PURGEARMED)) &&
       QC(st) == 0 && IC(st) == 0 && DC(st) < LIMIT ->
       st = st + D1 + X1; ar = 4
    :: else -> pub[rr] = 1
    fi
  };
  if
  :: ar == 4 ->
     atomic { w = rw[rr]; ar = 0 };                   /* relaxed load, */
     atomic { rw[rr] = WITH_WHERE(w, OWNED) | RPRESENTED; w = 0 };  /* plain store, */
     atomic { pub[rr] = 1; first = rr; enter = 1 };   /* then publish */
     goto arrived
  :: else -> skip
  fi;
#endif
  atomic {
    if
    :: !(st & ACCEPT) -> ar = 0                       /* rejected */
    :: (st & ACCEPT) && CAN_DISPATCH(st) && !(st & (EVENTS | IDLEARMED | PURGEARMED)) &&
       QC(st) == 0 && IC(st) == 0 && DC(st) < LIMIT ->
       st = st + D1 + X1; ar = 1                      /* fast path: a driver slot and a loop slot */
    /* reserve a queued slot (Accept checked): with the pop token when it is
     * free (Hold::token), else as an inserter in flight */
    :: else ->
       if
       :: !(st & TOKEN) -> st = st + Q1 + TOKEN; ar = 3
       :: else -> st = st + Q1 + I1; ar = 2
       fi
    fi
  };
  if
  :: ar == 0 ->
     atomic { ar = 0; FINISH_PACKET(rr) }             /* invalid_device_state */
  :: ar == 1 ->
#ifdef FIX_FAST_PATH_CAS
     atomic { rw[rr] = WITH_WHERE(rw[rr], OWNED) | RPRESENTED; ar = 0; first = rr; enter = 1 }
#else
     /* the request word: a relaxed load, then a plain store (not a CAS) */
     atomic { w = rw[rr]; ar = 0 };
     atomic { rw[rr] = WITH_WHERE(w, OWNED) | RPRESENTED; w = 0; first = rr; enter = 1 }
#endif
  :: ar == 2 ->
     atomic {
       ar = 0;
       if
       :: rw[rr] & RCANCELED ->                       /* canceled: the insert fails */
          FINISH_PACKET(rr); ok = 1
       :: else -> rw[rr] = WITH_WHERE(rw[rr], QUEUED); ok = 0
       fi
     };
     if
     :: ok ->
        ok = 0;
        update(0, Q1 + I1, 0, 0, 0)
     :: else ->
        insert_counted(rr)
     fi
  :: ar == 3 ->
     atomic {
       ar = 0;
       if
       :: rw[rr] & RCANCELED -> st = st + I1 - TOKEN; ok = 1  /* to_inserter(): before the callback */
       :: else -> rw[rr] = WITH_WHERE(rw[rr], QUEUED); ok = 0
       fi
     };
     if
     :: ok ->
        atomic { ok = 0; FINISH_PACKET(rr) };               /* cancelled, as with ar == 2 */
        update(0, Q1 + I1, 0, 0, 0)
     :: else ->
        insert_token(rr)
     fi
  fi;
#ifdef PUBLISH_LATE
arrived: skip
#endif
}

/* QueueImpl::cancel_queued(): token, drain the inbox, unlink it if found;
 * else (still on its way in) cancel_scan_ and kEvents. */
inline cancel_queued(rr) {
  take_token();
  drain_inbox();
  atomic {
    found = (WHERE(rw[rr]) == QUEUED && in_fifo[rr]);
    if
    :: found ->
       in_fifo[rr] = 0;
       assert(!(rw[rr] & RPRESENTED));
       rw[rr] = WITH_WHERE(rw[rr] | RCANCELED, COMPLETING)
    :: else -> skip
    fi
  };
  if
  :: found -> atomic { st = st - Q1 }
  :: else -> skip
  fi;
  release_token();
  if
  :: !found ->
     if
     :: WHERE(rw[rr]) == QUEUED ->
        cancel_scan = 1;
        update(0, 0, EVENTS, 0, 0)
     :: else -> skip
     fi
  :: else ->
     atomic { found = 0; FINISH_PACKET(rr) };
     update(0, 0, 0, 0, 0)                 /* kick() */
  fi
}

/* DeviceImpl::cancel_impl(handle). */
inline cancel_impl(rr) {
  atomic {
    w = rw[rr];
    cres = 0;
    if
    :: WHERE(w) == UNBOUND || WHERE(w) == DONE || WHERE(w) == COMPLETING || (w & RCANCELED) -> skip
    :: WHERE(w) == NEW && !(w & RCANCELED) ->
       rw[rr] = w | RCANCELED; cancel_ok[rr] = 1        /* the queue sees it when it inserts */
    :: WHERE(w) == QUEUED && !(w & RCANCELED) ->
       rw[rr] = w | RCANCELED; cancel_ok[rr] = 1; cres = 1
    :: WHERE(w) == OWNED && !(w & RCANCELED) && (w & RCANCELABLE) ->
       rw[rr] = (w & ~RCANCELABLE) | RCANCELED | RCANCELCB; cancel_ok[rr] = 1; cres = 2
    :: WHERE(w) == OWNED && !(w & RCANCELED) && !(w & RCANCELABLE) ->
       rw[rr] = w | RCANCELED; cancel_ok[rr] = 1          /* the driver sees is_canceled() */
    fi;
    w = 0
  };
  if
  :: cres == 1 -> cres = 0; cancel_queued(rr)
  :: cres == 2 -> cres = 0; push_event(rr)              /* schedule_cancel_callback */
  :: else -> skip
  fi
}

/* QueueImpl::cancel_cancelable_owned(): every owned cancelable request gets
 * its cancel callback (for_each_owned: one CAS each, then push_event). */
inline cancel_cancelable_owned() {
  atomic {
    j = 0;
    do
    :: j < NREQ ->
       if
       :: WHERE(rw[j]) == OWNED && (rw[j] & RCANCELABLE) ->
          rw[j] = (rw[j] & ~RCANCELABLE) | RCANCELED | RCANCELCB; tlist = tlist | (1 << j)
       :: else -> skip
       fi;
       j++
    :: else -> break
    od;
    j = 0
  };
  do
  :: atomic { j < NREQ && (tlist & (1 << j)) -> tlist = tlist & ~(1 << j) }; push_event(j)
  :: atomic { j < NREQ && !(tlist & (1 << j)) -> j++ }
  :: atomic { j >= NREQ -> j = 0; tlist = 0; break }
  od
}

/* QueueImpl::start_impl() */
inline start_impl() {
  purge_mode = 0;
  atomic { st = (st | DISPATCH | ACCEPT) & ~LATCH };
  update(0, 0, 0, 0, 0)                     /* kick() */
}

/* QueueImpl::stop_impl(cb, ctx, purge), with a callback (the sync variants). */
inline stop_impl(prg) {
  /* under control_: the slot check, idle_slot_ = Slot{cb, ctx} and the CAS
   * are one step here: nothing reads the slot before kIdleArmed is set, and
   * only this thread sets kIdleArmed */
  atomic {
    if
    :: (st & IDLEARMED) -> ok = 0           /* usage_slot_busy */
    :: else ->
       idle_slot = idle_arms + 1;
       st = (st | ACCEPT) & ~DISPATCH;
       st = st | IDLEARMED;
       idle_arms++;
       if
       :: prg -> st = st | LATCH
       :: else -> skip
       fi;
       ok = 1
    fi
  };
  if
  :: !ok -> skip
  :: else ->
     ok = 0;
     if
     :: prg ->
        take_token();
        drain_inbox();
        take_all_queued(0);
        release_token();
        dispose_list();
        cancel_cancelable_owned()
     :: else -> skip
     fi;
     update(0, 0, 0, 0, 0)                  /* kick() */
  fi
}

/* QueueImpl::drain_impl(cb, ctx, purge), with a callback. */
inline drain_impl(prg) {
  atomic {
    if
    :: (st & PURGEARMED) -> ok = 0          /* usage_slot_busy */
    :: else -> purge_slot = purge_arms + 1; ok = 1
    fi
  };
  if
  :: !ok -> skip
  :: else ->
     ok = 0;
     if
     :: prg -> purge_mode = 1
     :: else -> skip
     fi;
     atomic {
       st = st & ~ACCEPT;
       st = st | PURGEARMED;
       purge_arms++;
       if
       :: prg -> st = st | LATCH
       :: else -> skip
       fi
     };
     if
     :: prg ->
        take_token();
        drain_inbox();
        take_all_queued(0);
        release_token();
        dispose_list();
        cancel_cancelable_owned()
     :: else -> skip
     fi;
     update(0, 0, 0, 0, 0)                  /* kick() */
  fi
}

/* enter_loop(): on the calling thread (dispatch level, no home core) */
#define MAYBE_RUN_LOOP \
  if \
  :: enter -> enter = 0; run_loop() \
  :: else -> skip \
  fi

/* ======================================================================== */
/* Threads */

/* Device::submit of requests lo .. hi-1, one after the other. */
proctype Submitter(byte lo; byte hi) {
  LOOP_LOCALS
  byte nxt = lo;
  do
  :: nxt < hi ->
#ifdef PUBLISH_LATE
     rw[nxt] = NEW;                          /* DeviceImpl::bind: not published yet */
#else
     atomic { rw[nxt] = NEW; pub[nxt] = 1 }  /* DeviceImpl::bind: the handle is out */
#endif
     arrive(nxt);
     nxt++;
     MAYBE_RUN_LOOP
  :: else -> break
  od
}

/* The driver's own thread: completes what its handlers kept; for a request
 * it marked cancelable, unmark_cancelable first (under the driver's lock:
 * cancelled -> the cancel callback completes it), unless it waits for the
 * cancel (forever). */
#define PICK(i) (held[i] && !(dcancel[i] && forever[i]))
#define UNMARK(i) \
  dr = i; \
  if \
  :: dcancel[i] && (rw[i] & RCANCELCB) -> held[i] = 0; ok = 0 \
  :: dcancel[i] && !(rw[i] & RCANCELCB) -> \
     assert(rw[i] & RCANCELABLE); rw[i] = rw[i] & ~RCANCELABLE; dcancel[i] = 0; ok = 1 \
  :: !dcancel[i] -> ok = 1 \
  fi
proctype Driver() {
  LOOP_LOCALS
end:
  do
  :: if
     :: atomic { PICK(0) -> UNMARK(0) }
     :: atomic { PICK(1) -> UNMARK(1) }
#if NREQ > 2
     :: atomic { PICK(2) -> UNMARK(2) }
#endif
     fi;
     if
     :: ok -> ok = 0; do_complete(dr)
     :: else -> skip
     fi;
     dr = 0;
     MAYBE_RUN_LOOP
  od
}

/* Device::cancel(packet): at most NCANCEL cancels, of bound requests. */
proctype Canceller() {
  LOOP_LOCALS
  byte cidx = 0;
  do
  :: cidx < NREQ && ncancel < NCANCEL ->
     if
     :: rw[cidx] != UNBOUND && pub[cidx] -> ncancel++; cancel_impl(cidx)
     :: skip
     fi;
     cidx++;
     MAYBE_RUN_LOOP
  :: else -> break
  od
}

/* The control path: NOPS operations, each start, stop(cb),
 * stop_and_purge(cb), drain(cb) or purge(cb) (one control_ holder). */
proctype Controller() {
  LOOP_LOCALS
  byte nops = 0, op;
  do
  :: nops < NOPS ->
     nops++;
     if
     :: (OPS & 1) -> op = 0
     :: (OPS & 2) -> op = 1
     :: (OPS & 4) -> op = 2
     :: (OPS & 8) -> op = 3
     :: (OPS & 16) -> op = 4
     fi;
     if
     :: op == 0 -> start_impl()
     :: op == 1 -> stop_impl(0)             /* stop */
     :: op == 2 -> stop_impl(1)             /* stop_and_purge */
     :: op == 3 -> drain_impl(0)            /* drain */
     :: op == 4 -> drain_impl(1)            /* purge */
     fi;
     op = 0;
     MAYBE_RUN_LOOP
  :: else -> break
  od
}

/* Global invariant, checked in every state (safety runs). */
#define INVARIANT ( \
  QC(st) <= NREQ && DC(st) <= NREQ && IC(st) <= NREQ && XC(st) <= 5 && \
  idle_fires <= idle_arms && purge_fires <= purge_arms)
active proctype Monitor() {
end:
  atomic { !INVARIANT -> assert(false) }
}

init {
  byte i, nq, no;
  atomic {
#if NSUB == 1
    run Submitter(0, NREQ);
#else
    run Submitter(0, NREQ - 1);
    run Submitter(NREQ - 1, NREQ);
#endif
    run Driver();
#if NCANCEL > 0
    run Canceller();
#endif
#if NOPS > 0
    run Controller();
#endif
    skip
  };
  /* Quiescence: no thread can move. */
  timeout ->
  if
  :: (st & TOKEN) || XC(st) != 0 || IC(st) != 0 ->
     /* property 3: stopped with a thread inside the loop, an insert or the
      * token: this process stays here, an invalid end state for spin (as is
      * the thread that is stuck, if one is) */
     false
  :: else -> skip
  fi;
  atomic {
    /* property 1: no event left, nothing a thread entering the loop would
     * deliver (work_for(st, 0) is false) */
    assert(!(st & EVENTS) && evmask == 0 && !cancel_scan);
    assert(!(POPPABLE(st) && purge_mode));
    assert(!(CAN_DISPATCH(st) && POPPABLE(st) && DC(st) < LIMIT));
    /* property 2: each arming fired once, or is still armed and its condition
     * is false (the rest of work_for(st, 0)) */
    assert(idle_fires + ((st & IDLEARMED) != 0) == idle_arms);
    assert(purge_fires + ((st & PURGEARMED) != 0) == purge_arms);
    assert(!((st & IDLEARMED) && DC(st) == 0));
    assert(!((st & PURGEARMED) && DC(st) == 0 && QC(st) == 0));
    /* property 4 (and 1): every request completed once, or held by a queue
     * that does not dispatch, or pending in the driver's hands as cancelable
     * and not canceled */
    i = 0;
    do
    :: i < NREQ ->
       assert(done[i] == (WHERE(rw[i]) == DONE));
       if
       :: WHERE(rw[i]) == DONE -> skip
       :: WHERE(rw[i]) == QUEUED ->
          assert(!(rw[i] & RCANCELED) && !cancel_ok[i]);
          nq++
       :: WHERE(rw[i]) == OWNED ->
          assert(held[i] && dcancel[i] && forever[i] && (rw[i] & RCANCELABLE));
          assert(!(rw[i] & RCANCELED) && !cancel_ok[i]);   /* no cancel lost */
          assert(!(st & LATCH));                           /* purge cancelled it */
          no++
       :: else -> assert(false)
       fi;
       i++
    :: else -> break
    od;
    assert(QC(st) == nq && DC(st) == no)
  }
}
