// --allocations: which types each client allocates, to find where a flow's bytes go. The runtime reports a sample
// every ~100 KB allocated (the GCAllocationTick event, with the type that crossed the mark); over thousands of flows
// the samples add up to a faithful split of the exact total that GC.GetTotalAllocatedBytes gives.

using ToolCall;
using System;
using System.Collections.Generic;
using System.Diagnostics.Tracing;
using System.Globalization;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;

static class AllocationProfile
{
    public static async Task RunAsync(BenchClient client, int flows, int top)
    {
        for (int i = 0; i < flows / 4; i++) // a short warm-up: types, unlike CPU, hardly change as the JIT tiers up
            await client.RunFlowAsync(CancellationToken.None);
        using var listener = new AllocationTicks();
        long before = GC.GetTotalAllocatedBytes(precise: true);
        for (int i = 0; i < flows; i++)
            await client.RunFlowAsync(CancellationToken.None);
        long perFlow = (GC.GetTotalAllocatedBytes(precise: true) - before) / flows;
        listener.Stop();

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{client.Name}: {perFlow:N0} bytes per flow, by type (sampled):"));
        Dictionary<string, long> byType = listener.ByType();
        double sampled = byType.Values.Sum();
        foreach ((string type, long bytes) in byType.OrderByDescending(p => p.Value).Take(top))
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {bytes / sampled * perFlow,8:N0}  {type}"));
        Console.WriteLine();
    }

    sealed class AllocationTicks : EventListener
    {
        readonly Dictionary<string, long> byType = [];
        volatile bool listening = true;

        public void Stop() => listening = false;

        public Dictionary<string, long> ByType()
        {
            lock (byType)
                return new(byType);
        }

        protected override void OnEventSourceCreated(EventSource source)
        {
            if (source.Name == "Microsoft-Windows-DotNETRuntime")
                EnableEvents(source, EventLevel.Verbose, (EventKeywords)0x1); // the GC keyword
        }

        protected override void OnEventWritten(EventWrittenEventArgs e)
        {
            if (!listening || e.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) != true || e.PayloadNames is null)
                return;
            string type = e.Payload![e.PayloadNames.IndexOf("TypeName")] as string ?? "?";
            long bytes = Convert.ToInt64(e.Payload[e.PayloadNames.IndexOf("AllocationAmount64")], CultureInfo.InvariantCulture);
            lock (byType)
                byType[type] = byType.GetValueOrDefault(type) + bytes;
        }
    }
}
