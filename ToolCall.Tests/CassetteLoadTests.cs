// CassetteLoadTests.cs: what Cassette.Load refuses up front (a missing field without a default, a file past its size
// limit), each as one line naming the interaction and the field, or the file.

using System.Text.Json.Nodes;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// A cassette is checked whole when it loads, so that a broken one stops the program with one line (exit 2) instead of
/// being served wrong: a field that has no documented default must be there, and the file is read up to a limit.
/// </summary>
public class CassetteLoadTests
{
    static readonly JsonObject Hello = Wire.Request(Wire.User("Hello?"));
    static readonly Cassette TwoAnswers = Wire.Cassette(
        Wire.Exchange(Hello, Wire.Completion(Wire.Text("Hi."))),
        Wire.Exchange(Wire.Request(Wire.User("And now?")), Wire.Completion(Wire.Text("Still hi."))));

    [Theory]
    [InlineData("request", "body", "interaction 2's request needs a \"body\" (null for a request sent without one)")]
    [InlineData("response", "body", "interaction 2's response needs a \"body\", \"text\" or \"events\"")]
    public async Task CassetteMissingAFieldWithoutADefault_ExitsWith2_InOneLineNamingTheInteractionAndTheField(string part, string field, string expected)
    {
        using var dir = new TempDir();
        JsonObject json = TwoAnswers.ToJson();
        json["interactions"]![1]![part]!.AsObject().Remove(field);
        File.WriteAllText(dir.File("c.json"), json.ToJsonString());

        CliResult run = await App.RunAsync("--replay", dir.File("c.json"));
        UsageException error = Assert.Throws<UsageException>(() => Cassette.Load(dir.File("c.json")));

        Assert.Equal(2, run.ExitCode);
        Assert.Equal($"error: {error.Message}", Assert.Single(run.Stderr.TrimEnd().Split('\n')));
        Assert.Equal($"cassette {dir.File("c.json")}: {expected}. See the cassette format in README.md.", error.Message);
    }

    [Fact]
    public void CassetteLeavingOutWhatHasADefault_Loads_WithTheDefaults()
    {
        using var dir = new TempDir();
        JsonObject json = TwoAnswers.ToJson();
        JsonObject request = json["interactions"]![0]!["request"]!.AsObject();
        request.Remove("method");
        request.Remove("path");
        json["interactions"]![1]!["request"]!["body"] = null; // a request sent without a body: there, and null
        File.WriteAllText(dir.File("c.json"), json.ToJsonString());

        Cassette loaded = Cassette.Load(dir.File("c.json"));

        Assert.Equal(("POST", "/chat/completions"), (loaded.Interactions[0].Method, loaded.Interactions[0].Path));
        Assert.Null(loaded.Interactions[1].RequestBody);
    }

    [Fact]
    public void DevZeroAsACassette_IsRefusedPastTheSizeLimit_NotReadUntilMemoryRunsOut()
    {
        if (OperatingSystem.IsWindows())
            return; // no /dev/zero
        // The file system gives /dev/zero a length of 0: only a limit on the bytes read stops it.

        UsageException error = Assert.Throws<UsageException>(() => Cassette.Load("/dev/zero"));

        Assert.Equal("cassette /dev/zero is over 64 MB, the most a cassette may be: check that it is the right file.", error.Message);
    }

    [Fact]
    public void CassetteFileOver64MB_IsRefusedNamingTheLimit()
    {
        using var dir = new TempDir();
        string path = dir.File("huge.json");
        using (FileStream file = File.Create(path))
            file.SetLength(Cassette.MaxBytes + 1L); // zeros, and sparse: nothing is written to disk

        UsageException error = Assert.Throws<UsageException>(() => Cassette.Load(path));

        Assert.Equal($"cassette {path} is over 64 MB, the most a cassette may be: check that it is the right file.", error.Message);
    }
}
