using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Xunit;

namespace ToolCall.Tests;

/// <summary>
/// ToolCall.cs is the reference a learner copies: it compiles alone, unmodified, in a project of their own, and the
/// README's "Use it in your app" is a whole program that runs the four steps with it. The rest of the program is held
/// to its layering the same way: what compiles without the rest cannot depend on it.
/// </summary>
public partial class CompileAloneTests
{
    // The ```csharp block after the README's marker for it.
    [GeneratedRegex(@"<!-- Program\.cs: [^\n]*-->\n```csharp\n(?<code>.*?)\n```", RegexOptions.Singleline)]
    private static partial Regex ReadmeProgram();

    [Fact]
    public async Task ReadmeProgram_BesideAnUnmodifiedToolCallCs_InANewConsoleProject_AnswersFromTheReplayServer()
    {
        string readme = File.ReadAllText(Path.Combine(Repo.Root, "README.md")).ReplaceLineEndings("\n");
        Match program = ReadmeProgram().Match(readme);
        Assert.True(program.Success, "README.md has no Program.cs block after its marker");
        using var dir = new TempDir();
        string app = Path.Combine(dir.Path, "app");
        Dotnet(dir.Path, "new", "console", "-o", app, "-n", "App");
        File.Copy(Path.Combine(Repo.Root, "ToolCall.cs"), Path.Combine(app, "ToolCall.cs"));
        File.WriteAllText(Path.Combine(app, "Program.cs"), program.Groups["code"].Value + "\n");
        Dotnet(app, "build", "-warnaserror", "-nologo", "-v", "quiet", "--disable-build-servers");

        using Process serve = App.Start("serve", "cassettes/weather.json");
        try
        {
            string baseUrl = (await serve.StandardOutput.ReadLineAsync())!;
            CliResult run = Run(app, "dotnet", [Path.Combine(app, "bin", "Debug", "net10.0", "App.dll")], ("OPENAI_BASE_URL", baseUrl));

            Assert.True(run.ExitCode == 0, run.ToString());
            Assert.Equal("It's currently +18°C and partly cloudy in London.\n", run.Stdout.ReplaceLineEndings("\n"));
            int[] steps = [.. Enumerable.Range(1, 4).Select(n => run.Stderr.IndexOf($"Step {n}: ", StringComparison.Ordinal))];
            Assert.All(steps, position => Assert.True(position >= 0, run.Stderr));
            Assert.Equal(steps.Order(), steps);
        }
        finally
        {
            serve.Kill(entireProcessTree: true);
            await serve.WaitForExitAsync();
        }
    }

    [Theory]
    [InlineData("enable", "enable")]
    [InlineData("disable", "disable")]
    public void ToolCallCs_CompilesAlone_WithWarningsAsErrors(string nullable, string implicitUsings) =>
        AssertCompilesAlone(["ToolCall.cs"], $"<Nullable>{nullable}</Nullable><ImplicitUsings>{implicitUsings}</ImplicitUsings>");

    [Fact]
    public void ReplayServer_CompilesWithoutTheClient_OnlyWithTheSharedFiles() =>
        AssertCompilesAlone(["Shared/*.cs", "ReplayServer/*.cs"]);

    [Fact]
    public void TheClient_CompilesWithoutTheReplayServerAndTheCommandLine() =>
        AssertCompilesAlone(["ToolCall.cs", "Shared/*.cs", "Client/*.cs", "Apis/*.cs"]);

    [Fact]
    public void ToolCallCs_StaysAReference_AtMost500Lines_WithStep1InTheFirst150()
    {
        string[] lines = File.ReadAllLines(Path.Combine(Repo.Root, "ToolCall.cs"));

        Assert.True(lines.Length <= 500, $"ToolCall.cs has {lines.Length} lines");
        Assert.InRange(Array.FindIndex(lines, line => line.Contains("// Step 1:", StringComparison.Ordinal)) + 1, 1, 150);
    }

    [Fact]
    public void EveryOtherSourceFileOfTheProgram_IsAtMost600Lines_AndSaysWhatItIsInItsFirstLine()
    {
        foreach (string file in ProgramSources().Where(file => Path.GetFileName(file) != "ToolCall.cs"))
        {
            string[] lines = File.ReadAllLines(file);
            string name = Path.GetRelativePath(Repo.Root, file);

            Assert.True(lines.Length <= 600, $"{name} has {lines.Length} lines");
            Assert.StartsWith($"// {Path.GetFileName(file)}: ", lines[0]);
        }
    }

    /// <summary>Every .cs file ToolCall.csproj compiles: all but the test, bench, conformance and build folders.</summary>
    static IEnumerable<string> ProgramSources()
    {
        string[] excluded = ["ToolCall.Tests", "bench", "conformance", "bin", "obj", "artifacts"];
        return Directory.GetFiles(Repo.Root, "*.cs", SearchOption.AllDirectories)
            .Where(file => !excluded.Contains(Path.GetRelativePath(Repo.Root, file).Split(Path.DirectorySeparatorChar)[0]));
    }

    /// <summary>Builds a library of these source files alone (globs relative to the repository), warnings as errors.</summary>
    static void AssertCompilesAlone(string[] sources, string properties = "<Nullable>enable</Nullable>")
    {
        using var dir = new TempDir();
        string compile = string.Concat(sources.Select(source => $"<Compile Include=\"{Path.Combine(Repo.Root, source)}\" />"));
        File.WriteAllText(dir.File("Alone.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <TargetFramework>net10.0</TargetFramework>
                <EnableDefaultCompileItems>false</EnableDefaultCompileItems>
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
                {properties}
              </PropertyGroup>
              <ItemGroup>{compile}</ItemGroup>
            </Project>
            """);
        Dotnet(dir.Path, "build", "-nologo", "-v", "quiet", "--disable-build-servers");
    }

    static void Dotnet(string directory, params string[] args)
    {
        CliResult result = Run(directory, "dotnet", args);
        Assert.True(result.ExitCode == 0, $"dotnet {string.Join(' ', args)} failed:\n{result}");
    }

    static CliResult Run(string directory, string program, string[] args, params (string Name, string Value)[] environment)
    {
        var start = new ProcessStartInfo(program)
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (string arg in args)
            start.ArgumentList.Add(arg);
        foreach (string name in new[] { "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL" })
            start.Environment.Remove(name);
        foreach ((string name, string value) in environment)
            start.Environment[name] = value;
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using Process process = Process.Start(start)!;
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return new CliResult(process.ExitCode, stdout.Result, stderr.Result);
    }
}
