// ConnectionSlots.cs: the replay server's connection slots, and how one held by a slow client is reclaimed for a client that waits.

using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;

namespace ToolCall;

/// <summary>
/// The replay server's slots: one per connection served, `count` at once (MaxConnections), so that its memory stays
/// bounded. Bounding each connection's time alone (RequestTimeout) does not keep slots free: clients that send a byte
/// every few seconds, and reconnect when dropped, hold every slot for good (all from one address, so a bound per
/// address does not help), and a client with a whole request waits behind them.
///
/// So when every slot is taken and a connection waits to be accepted, the slot of the connection that has waited
/// longest for a request's headers is reclaimed for it, once that wait has passed `headerDeadline` (on the server's
/// clock). A connection waits for headers from when it is accepted, and, kept alive, from the end of each answer to
/// the end of the next request's headers; the bytes that trickle in meanwhile do not restart the wait. A connection
/// whose headers have arrived (its body being read, its request handled, its answer being sent) is never reclaimed.
/// One slot is reclaimed at a time, for the one connection waiting; the others wait in the listen backlog, first
/// come first served, so a whole request behind N slow ones is accepted after about N / count × headerDeadline.
/// </summary>
sealed class ConnectionSlots(int count, TimeSpan headerDeadline, TimeProvider time)
{
    readonly TimeProvider clock = time;
    readonly Lock gate = new();
    readonly List<Slot> taken = []; // in the order taken: of waits that began at the same instant, the first is the oldest
    TaskCompletionSource changed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// A slot for a connection just accepted, which waits for its first request's headers from now. While every slot
    /// is taken, waits for one to be given back or for the longest wait for headers to pass headerDeadline, and then
    /// reclaims that connection's slot.
    /// </summary>
    public async Task<Slot> TakeAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            Slot? reclaim = null;
            TimeSpan untilDeadline = Timeout.InfiniteTimeSpan;
            Task wake;
            lock (gate)
            {
                if (taken.Count < count)
                {
                    var slot = new Slot(this) { WaitingSince = clock.GetTimestamp() };
                    taken.Add(slot);
                    return slot;
                }
                // One reclaim at a time: until the reclaimed connection has closed, wait for it.
                if (!taken.Any(s => s.IsReclaimed) && taken.Where(s => s.WaitingSince is not null).MinBy(s => s.WaitingSince) is Slot oldest)
                {
                    TimeSpan waited = clock.GetElapsedTime(oldest.WaitingSince!.Value);
                    if (waited >= headerDeadline)
                        (oldest.IsReclaimed, reclaim) = (true, oldest);
                    else
                        untilDeadline = headerDeadline - waited;
                }
                wake = changed.Task;
            }
            if (reclaim is not null)
            {
                reclaim.Cancel(); // outside the lock: cancelling runs the connection's callbacks on this thread
                continue;
            }
            using var stopWaiting = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            await Task.WhenAny(wake, Task.Delay(untilDeadline, clock, stopWaiting.Token));
            stopWaiting.Cancel(); // the deadline's timer, if it has not fired
            cancellationToken.ThrowIfCancellationRequested();
        }
    }

    /// <summary>Wakes TakeAsync: a slot was given back, or a connection began to wait for headers.</summary>
    void Changed()
    {
        TaskCompletionSource seen;
        lock (gate)
            (seen, changed) = (changed, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        seen.TrySetResult();
    }

    /// <summary>One connection's slot. Its state is read and written under the owner's lock.</summary>
    public sealed class Slot(ConnectionSlots owner) : IDisposable
    {
        readonly CancellationTokenSource reclaimed = new();

        /// <summary>When the connection began to wait for a request's headers (a timestamp of the server's clock);
        /// null while none is awaited.</summary>
        public long? WaitingSince { get; set; }

        /// <summary>Whether the slot is being reclaimed: the connection is to close, answering 408 if part of a
        /// request has arrived.</summary>
        public bool IsReclaimed { get; set; }

        /// <summary>Cancelled when the slot is reclaimed, to stop the connection's wait for a request.</summary>
        public CancellationToken Reclaimed => reclaimed.Token;

        /// <summary>Whether the slot was reclaimed (possibly before Reclaimed is cancelled).</summary>
        public bool WasReclaimed
        {
            get
            {
                lock (owner.gate)
                    return IsReclaimed;
            }
        }

        /// <summary>The connection, kept alive after an answer, waits for the next request's headers from now.</summary>
        public void WaitForRequest()
        {
            lock (owner.gate)
                WaitingSince = owner.clock.GetTimestamp();
            owner.Changed();
        }

        /// <summary>The request's headers are in: from now on this slot is not reclaimed. False when it already
        /// was, and the connection is to close.</summary>
        public bool HeadersArrived()
        {
            lock (owner.gate)
            {
                if (IsReclaimed)
                    return false;
                WaitingSince = null;
                return true;
            }
        }

        /// <summary>Cancels Reclaimed, once TakeAsync has set IsReclaimed. (The source is never disposed: it has no
        /// timer, and the connection may close at the same moment.)</summary>
        public void Cancel() => reclaimed.Cancel();

        /// <summary>Gives the slot back, when the connection has closed.</summary>
        public void Dispose()
        {
            lock (owner.gate)
                owner.taken.Remove(this);
            owner.Changed();
        }
    }
}
