// Tests of flock/codec.hpp: what the binary codec carries, what it refuses at compile time, and
// that corrupt input only ever ends in flockmp::CodecError.
#include <flock/codec.hpp>

#include <array>
#include <chrono>
#include <complex>
#include <cstdint>
#include <filesystem>
#include <cstring>
#include <deque>
#include <exception>
#include <forward_list>
#include <functional>
#include <limits>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <ranges>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <typeinfo>
#include <unordered_map>
#include <unordered_set>
#include <variant>
#include <vector>

#include "catch.hpp"

namespace {

enum class Color : std::uint8_t {
  red,
  green,
  blue
};
enum Plain {
  plainA = 1,
  plainB = 1000
};

struct Point {
  int x = 0;
  int y = 0;
  bool operator==(const Point&) const = default;
};

struct Person {
  std::string name;
  int age = 0;
  std::vector<std::string> tags;
  std::optional<double> score;
  bool operator==(const Person&) const = default;
};

struct Team {
  Person lead;
  std::map<int, std::string> roles;
  std::array<Point, 2> corners{};
  std::variant<int, std::string, Point> badge;
  std::vector<Person> members;
  bool operator==(const Team&) const = default;
};

// Raw, with a bool that decoding must check.
struct Flagged {
  std::int32_t id = 0;
  bool on = false;
  bool operator==(const Flagged&) const = default;
};

// An aggregate with a const member and no default constructor: decoded by braced init.
struct Labelled {
  const int id;
  std::string label;
  bool operator==(const Labelled& o) const { return id == o.id && label == o.label; }
};

// Trivially copyable but not an aggregate: carried as object bytes.
class Opaque {
public:
  Opaque() = default;
  Opaque(int a, double b) : a_(a), b_(b) {}
  bool operator==(const Opaque&) const = default;

private:
  int a_ = 0;
  double b_ = 0;
};

struct Empty {
  bool operator==(const Empty&) const = default;
};

// A member hook, on a type that is not an aggregate.
class Account {
public:
  Account() = default;
  Account(std::string owner, std::int64_t cents) : owner_(std::move(owner)), cents_(cents) {}
  bool operator==(const Account&) const = default;

  template <class Ar>
  void serialize(Ar& ar) {
    ar(owner_, cents_);
  }

private:
  std::string owner_;
  std::int64_t cents_ = 0;
};

// A private member hook reached through flockmp::CodecAccess.
class Secret {
public:
  Secret() = default;
  explicit Secret(std::vector<int> v) : v_(std::move(v)) {}
  bool operator==(const Secret&) const = default;

private:
  friend struct flockmp::CodecAccess;
  template <class Ar>
  void serialize(Ar& ar) {
    ar(v_);
  }
  std::vector<int> v_;
};

// Trivially copyable, so raw without its hook: the hook must win and change the encoding.
struct Widened {
  std::int32_t v = 0;
  template <class Ar>
  void serialize(Ar& ar) {
    std::int64_t wide = v;
    std::uint8_t marker = 0xAB;
    ar(marker, wide);
    if constexpr (Ar::isDecoding) {
      if (marker != 0xAB) throw flockmp::CodecError("bad Widened marker");
      v = static_cast<std::int32_t>(wide);
    }
  }
  bool operator==(const Widened&) const = default;
};

// Neither default constructible nor modifiable by "the user": a Serializer specialization.
class Celsius {
public:
  explicit Celsius(double d) : d_(d) {}
  [[nodiscard]] double degrees() const { return d_; }
  bool operator==(const Celsius&) const = default;

private:
  double d_;
};

// A raw aggregate whose Serializer encodes it as text: the specialization must win.
struct Meters {
  double v = 0;
  bool operator==(const Meters&) const = default;
};

// Holds things the codec refuses.
struct HoldsPointer {
  int* p = nullptr;
};
struct HoldsUnique {
  std::unique_ptr<int> p;
};
struct HoldsThread {
  std::thread t;
};
struct HoldsView {
  std::string_view s;
};
class HookNoDefault {
public:
  explicit HookNoDefault(int v) : v_(v) {}
  template <class Ar>
  void serialize(Ar& ar) {
    ar(v_);
  }

private:
  int v_;
};

struct WithBase : Point {
  int z = 0;
};
struct CArray {
  int a[3] = {};
  double d = 0;
  bool operator==(const CArray&) const = default;
};
struct CArrayAndString {
  int a[3] = {};
  std::string s;
};

struct Sixteen {
  int f0, f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14;
  std::string f15;
  bool operator==(const Sixteen&) const = default;
};

struct ThirtyTwo {
  std::string s0;
  int f1, f2, f3, f4, f5, f6, f7, f8, f9, f10, f11, f12, f13, f14, f15, f16;
  int f17, f18, f19, f20, f21, f22, f23, f24, f25, f26, f27, f28, f29, f30;
  std::string s31;
  bool operator==(const ThirtyTwo&) const = default;
};

struct Bits {
  std::string s;
  unsigned a : 3;
  unsigned b : 5;
  bool operator==(const Bits&) const = default;
};

// Recursive types: checked without endless recursion.
struct TreeNode {
  int value = 0;
  std::vector<TreeNode> children;
  std::map<std::string, TreeNode> named;
  bool operator==(const TreeNode&) const = default;
};
struct BadTree {
  std::vector<BadTree> children;
  std::thread worker;
};

// Throws when constructed from an int: makes a variant valueless.
struct Thrower {
  Thrower() = default;
  explicit Thrower(int /*unused*/) { throw std::runtime_error("no"); }
  // Not trivially copyable, so that std::variant cannot build it aside and stay valued.
  Thrower(const Thrower& /*unused*/) {}
  Thrower& operator=(const Thrower& /*unused*/) { return *this; }
  bool operator==(const Thrower&) const = default;
};

} // namespace

namespace user {
// A free serialize hook found by argument-dependent lookup.
struct Reading {
  std::string sensor;
  double value = 0;
  bool operator==(const Reading&) const = default;
};
template <class Ar>
void serialize(Ar& ar, Reading& r) {
  ar(r.sensor, r.value);
}
} // namespace user

template <>
struct flockmp::Serializer<Celsius> {
  static void encode(ByteWriter& w, const Celsius& c) { BinaryCodec::encode(w, c.degrees()); }
  static Celsius decode(ByteReader& r) { return Celsius{BinaryCodec::decode<double>(r)}; }
};

template <>
struct flockmp::Serializer<Meters> {
  static void encode(ByteWriter& w, const Meters& m) {
    BinaryCodec::encode(w, std::to_string(m.v));
  }
  static Meters decode(ByteReader& r) {
    const auto text = BinaryCodec::decode<std::string>(r);
    try {
      return Meters{std::stod(text)};
    } catch (const std::exception&) {
      throw CodecError("bad Meters text");
    }
  }
};

namespace {

// A codec for ints only, to check CodecFor and the codec parameter of encode/decode.
struct TextCodec {
  static void encode(flockmp::ByteWriter& w, int v) {
    const std::string s = std::to_string(v);
    w.write(s.data(), s.size());
  }
  template <class T>
  requires std::same_as<T, int>
  static T decode(flockmp::ByteReader& r) {
    std::string s(r.remaining(), '\0');
    r.read(s.data(), s.size());
    return std::stoi(s);
  }
};

// ---- compile-time checks -------------------------------------------------------------------

using flockmp::BinaryCodec;
using flockmp::CodecFor;
using flockmp::Serializable;

static_assert(Serializable<int> && Serializable<bool> && Serializable<char8_t> &&
              Serializable<std::byte>);
static_assert(Serializable<long double> && Serializable<Color> && Serializable<Plain>);
static_assert(Serializable<std::string> && Serializable<std::u16string> &&
              Serializable<std::wstring>);
static_assert(Serializable<std::vector<int>> && Serializable<std::vector<bool>> &&
              Serializable<std::deque<int>>);
static_assert(Serializable<std::list<std::string>> && Serializable<std::forward_list<int>>);
static_assert(Serializable<std::map<std::string, std::vector<int>>> &&
              Serializable<std::multimap<int, int>>);
static_assert(Serializable<std::unordered_map<int, std::string>> &&
              Serializable<std::set<std::string>>);
static_assert(Serializable<std::unordered_set<int>> &&
              Serializable<std::pair<const int, std::string>>);
static_assert(Serializable<std::tuple<>> && Serializable<std::tuple<int, std::string, Point>>);
static_assert(Serializable<std::optional<std::string>> &&
              Serializable<std::variant<std::monostate, int>>);
static_assert(Serializable<std::monostate> && Serializable<Empty>);
static_assert(Serializable<std::chrono::milliseconds> &&
              Serializable<std::chrono::system_clock::time_point>);
static_assert(Serializable<std::complex<double>> && Serializable<Opaque>);
static_assert(Serializable<Point> && Serializable<Person> && Serializable<Team> &&
              Serializable<Labelled>);
static_assert(Serializable<Sixteen> && Serializable<ThirtyTwo> && Serializable<Bits>);
static_assert(Serializable<Account> && Serializable<Secret> && Serializable<user::Reading>);
static_assert(Serializable<Celsius> && Serializable<Meters> && Serializable<Widened>);
static_assert(Serializable<WithBase> && Serializable<CArray>); // trivially copyable: object bytes

static_assert(!Serializable<int*> && !Serializable<const char*> && !Serializable<void (*)()>);
static_assert(!Serializable<int Point::*> && !Serializable<int&> && !Serializable<std::nullptr_t>);
static_assert(!Serializable<std::string_view> && !Serializable<std::span<int>> &&
              !Serializable<std::span<int, 3>>);
static_assert(!Serializable<std::unique_ptr<int>> && !Serializable<std::shared_ptr<int>>);
static_assert(!Serializable<std::reference_wrapper<int>> && !Serializable<std::function<void()>>);
static_assert(!Serializable<std::thread> && !Serializable<int[3]> && !Serializable<void>);
static_assert(!Serializable<std::vector<int*>> && !Serializable<std::map<int, std::string_view>>);
static_assert(!Serializable<std::optional<int*>> && !Serializable<std::variant<int, int*>>);
static_assert(!Serializable<std::tuple<int, int&>> &&
              !Serializable<std::array<std::unique_ptr<int>, 2>>);
static_assert(!Serializable<HoldsPointer> && !Serializable<HoldsUnique> &&
              !Serializable<HoldsThread>);
static_assert(!Serializable<HoldsView> && !Serializable<HookNoDefault> &&
              !Serializable<CArrayAndString>);
static_assert(!Serializable<std::vector<std::vector<HoldsPointer>>>);
static_assert(Serializable<TreeNode> && !Serializable<BadTree>);
// The compile error names the innermost culprit, also through recursion.
static_assert(std::is_same_v<flockmp::detail::Culprit<std::vector<BadTree>>, std::thread>);
static_assert(std::is_same_v<flockmp::detail::Culprit<std::map<int, std::vector<int*>>>, int*>);
static_assert(std::is_same_v<flockmp::detail::Culprit<HoldsUnique>, std::unique_ptr<int>>);
static_assert(!Serializable<std::vector<int>::iterator> &&
              !Serializable<std::map<int, int>::iterator>);
#if !defined(__clang__) || __clang_major__ >= 16 // older clang cannot use libstdc++'s ranges
static_assert(!Serializable<std::ranges::iota_view<int, int>> &&
              !Serializable<std::ranges::ref_view<std::vector<int>>>);
#endif

static_assert(CodecFor<BinaryCodec, int> && CodecFor<BinaryCodec, Team> &&
              CodecFor<BinaryCodec, Celsius>);
static_assert(!CodecFor<BinaryCodec, int*> && !CodecFor<BinaryCodec, std::vector<int*>>);
static_assert(!CodecFor<BinaryCodec, HoldsUnique> && !CodecFor<BinaryCodec, std::string_view>);
static_assert(CodecFor<TextCodec, int> && !CodecFor<TextCodec, std::string>);

static_assert(BinaryCodec::isRaw<int> && BinaryCodec::isRaw<bool> && BinaryCodec::isRaw<double>);
static_assert(BinaryCodec::isRaw<Color> && BinaryCodec::isRaw<std::byte>);
static_assert(BinaryCodec::isRaw<std::array<double, 4>> &&
              BinaryCodec::isRaw<std::array<Point, 3>>);
static_assert(BinaryCodec::isRaw<Point> && BinaryCodec::isRaw<Flagged> &&
              BinaryCodec::isRaw<Opaque>);
static_assert(BinaryCodec::isRaw<std::chrono::seconds> && BinaryCodec::isRaw<CArray>);
static_assert(!BinaryCodec::isRaw<std::string> && !BinaryCodec::isRaw<std::vector<int>>);
static_assert(!BinaryCodec::isRaw<Person> && !BinaryCodec::isRaw<std::array<std::string, 2>>);
static_assert(!BinaryCodec::isRaw<Widened>, "a hook beats the raw rule");
static_assert(!BinaryCodec::isRaw<Meters>, "a Serializer beats the raw rule");
static_assert(!BinaryCodec::isRaw<std::optional<int>> &&
              !BinaryCodec::isRaw<std::variant<int, float>>);
static_assert(!BinaryCodec::isRaw<std::pair<int, int>> && !BinaryCodec::isRaw<std::tuple<int>>);
static_assert(!BinaryCodec::isRaw<int*> && !BinaryCodec::isRaw<std::string_view> &&
              !BinaryCodec::isRaw<Empty>);

// ---- helpers ---------------------------------------------------------------------------------

template <class T>
T roundTrip(const T& v) {
  return flockmp::decode<T>(flockmp::encode(v));
}

// The message of the flockmp::CodecError that f throws ("" when it throws nothing).
template <class F>
std::string codecErrorOf(F&& f) {
  try {
    f();
  } catch (const flockmp::CodecError& e) {
    return e.what();
  }
  return {};
}

std::vector<std::byte> bytesOfCount(std::uint64_t count, std::size_t trailing = 4) {
  std::vector<std::byte> out;
  flockmp::ByteWriter w{out};
  w.writeRaw(count);
  for (std::size_t i = 0; i < trailing; ++i) w.writeRaw(std::uint8_t{1});
  return out;
}

Person samplePerson() { return {"Ada", 36, {"math", "engines"}, 9.5}; }

Team sampleTeam() {
  return {samplePerson(),
          {{1, "lead"}, {2, "dev"}},
          {Point{1, 2}, Point{3, 4}},
          std::string{"gold"},
          {samplePerson(), Person{"Bob", 41, {}, std::nullopt}}};
}

template <class T>
T sample();
template <>
bool sample() {
  return true;
}
template <>
char sample() {
  return 'x';
}
template <>
std::int8_t sample() {
  return -7;
}
template <>
std::uint16_t sample() {
  return 65000;
}
template <>
int sample() {
  return -123456;
}
template <>
std::uint64_t sample() {
  return std::numeric_limits<std::uint64_t>::max() - 3;
}
template <>
float sample() {
  return 1.5f;
}
template <>
double sample() {
  return -2.25e300;
}
template <>
long double sample() {
  return 3.25L;
}
template <>
char32_t sample() {
  return U'\U0001F600';
}
template <>
std::byte sample() {
  return std::byte{0xFE};
}
template <>
Color sample() {
  return Color::blue;
}
template <>
Plain sample() {
  return plainB;
}
template <>
std::string sample() {
  return std::string("hello\0world", 11);
}
template <>
std::u16string sample() {
  return u"h\u00e9llo";
}
template <>
std::wstring sample() {
  return L"wide";
}
template <>
std::vector<int> sample() {
  return {1, -2, 3};
}
template <>
std::vector<bool> sample() {
  return {true, false, true, true};
}
template <>
std::vector<std::string> sample() {
  return {"a", "", "ccc"};
}
template <>
std::array<double, 4> sample() {
  return {1, 2, 3, 4};
}
template <>
std::array<std::string, 2> sample() {
  return {"x", "yy"};
}
template <>
std::deque<short> sample() {
  return {5, 6};
}
template <>
std::list<std::string> sample() {
  return {"l1", "l2"};
}
template <>
std::forward_list<int> sample() {
  return {9, 8, 7};
}
template <>
std::map<int, std::string> sample() {
  return {{1, "one"}, {2, "two"}};
}
template <>
std::multimap<int, int> sample() {
  return {{1, 1}, {1, 2}, {0, 3}};
}
template <>
std::unordered_map<std::string, int> sample() {
  return {{"a", 1}, {"b", 2}};
}
template <>
std::set<std::string> sample() {
  return {"b", "a"};
}
template <>
std::multiset<int> sample() {
  return {3, 3, 1};
}
template <>
std::unordered_set<int> sample() {
  return {4, 5, 6};
}
template <>
std::unordered_multimap<int, int> sample() {
  return {{1, 1}, {1, 1}};
}
template <>
std::pair<int, std::string> sample() {
  return {7, "seven"};
}
template <>
std::tuple<> sample() {
  return {};
}
template <>
std::tuple<int, std::string, Point> sample() {
  return {1, "t", Point{2, 3}};
}
template <>
std::optional<std::string> sample() {
  return "opt";
}
template <>
std::optional<int> sample() {
  return std::nullopt;
}
template <>
std::variant<std::monostate, int, std::string> sample() {
  return std::string{"v"};
}
template <>
std::monostate sample() {
  return {};
}
template <>
Empty sample() {
  return {};
}
template <>
std::chrono::milliseconds sample() {
  return std::chrono::milliseconds{1234};
}
template <>
std::chrono::system_clock::time_point sample() {
  return std::chrono::system_clock::time_point{std::chrono::seconds{1700000000}};
}
template <>
std::complex<double> sample() {
  return {1, -1};
}
template <>
Point sample() {
  return {3, -4};
}
template <>
Flagged sample() {
  return {42, true};
}
template <>
Opaque sample() {
  return {7, 0.5};
}
template <>
CArray sample() {
  return {{1, 2, 3}, 4.5};
}
template <>
WithBase sample() {
  return WithBase{{1, 2}, 3};
}
template <>
Person sample() {
  return samplePerson();
}
template <>
Team sample() {
  return sampleTeam();
}
template <>
Account sample() {
  return {"acct", -500};
}
template <>
Secret sample() {
  return Secret{{1, 2, 3}};
}
template <>
user::Reading sample() {
  return {"t1", 21.5};
}
template <>
Meters sample() {
  return {12.5};
}
template <>
Bits sample() {
  return {"bits", 5, 17};
}

bool operator==(const WithBase& a, const WithBase& b) {
  return a.x == b.x && a.y == b.y && a.z == b.z;
}

using StringMap = std::map<int, std::string>;
using MultiMap = std::multimap<int, int>;
using UMap = std::unordered_map<std::string, int>;
using UMultiMap = std::unordered_multimap<int, int>;
using PairIS = std::pair<int, std::string>;
using Tuple3 = std::tuple<int, std::string, Point>;
using Variant3 = std::variant<std::monostate, int, std::string>;
using Doubles4 = std::array<double, 4>;
using Strings2 = std::array<std::string, 2>;
using TimePoint = std::chrono::system_clock::time_point;

} // namespace

// ---- round trips -----------------------------------------------------------------------------

TEMPLATE_TEST_CASE("a value of every supported type round-trips", "[codec][roundtrip]", bool, char,
                   std::int8_t, std::uint16_t, int, std::uint64_t, float, double, long double,
                   char32_t, std::byte, Color, Plain, std::string, std::u16string, std::wstring,
                   std::vector<int>, std::vector<bool>, std::vector<std::string>, Doubles4,
                   Strings2, std::deque<short>, std::list<std::string>, std::forward_list<int>,
                   StringMap, MultiMap, UMap, std::set<std::string>, std::multiset<int>,
                   std::unordered_set<int>, UMultiMap, PairIS, std::tuple<>, Tuple3,
                   std::optional<std::string>, std::optional<int>, Variant3, std::monostate, Empty,
                   std::chrono::milliseconds, TimePoint, std::complex<double>, Point, Flagged,
                   Opaque, CArray, WithBase, Person, Team, Account, Secret, user::Reading, Meters,
                   Bits) {
  const TestType v = sample<TestType>();
  const auto bytes = flockmp::encode(v);
  CHECK(flockmp::decode<TestType>(bytes) == v);
  if constexpr (BinaryCodec::isRaw<TestType>) {
    // isRaw promises the encoding is exactly the object bytes.
    REQUIRE(bytes.size() == sizeof(TestType));
    CHECK(std::memcmp(bytes.data(), &v, sizeof(TestType)) == 0);
  }
}

TEST_CASE("std::filesystem::path round-trips, alone and inside containers", "[codec][roundtrip]") {
  // Catches a path carried as something else than its native string (a lost separator, say).
  const std::filesystem::path p = "/var/data/app db/2026-12-01.log";
  CHECK(roundTrip(p) == p);
  CHECK(roundTrip(std::filesystem::path{}).empty());
  const std::vector<std::filesystem::path> many = {"a", "b/c", "/d/e f"};
  CHECK(roundTrip(many) == many);
  static_assert(flockmp::Serializable<std::filesystem::path>);
}

TEST_CASE("empty containers and empty strings round-trip", "[codec][roundtrip]") {
  CHECK(roundTrip(std::string{}).empty());
  CHECK(roundTrip(std::vector<int>{}).empty());
  CHECK(roundTrip(std::vector<std::string>{}).empty());
  CHECK(roundTrip(std::vector<bool>{}).empty());
  CHECK(roundTrip(std::map<int, int>{}).empty());
  CHECK(roundTrip(std::unordered_set<std::string>{}).empty());
  CHECK(roundTrip(std::forward_list<int>{}).empty());
  CHECK(roundTrip(std::list<std::vector<int>>{}).empty());
  CHECK(flockmp::encode(std::vector<int>{}).size() == 8);
  CHECK(flockmp::encode(std::tuple<>{}).empty());
  CHECK(flockmp::encode(std::monostate{}).empty());
}

TEST_CASE("nested containers round-trip", "[codec][roundtrip]") {
  const std::vector<std::map<std::string, std::vector<std::optional<int>>>> v{
      {{"a", {1, std::nullopt, 3}}, {"b", {}}},
      {},
      {{"c", {std::nullopt}}},
  };
  CHECK(roundTrip(v) == v);

  const std::map<std::pair<int, std::string>, std::set<std::tuple<int, double>>> m{
      {{1, "x"}, {{1, 1.5}, {2, 2.5}}},
      {{2, "y"}, {}},
  };
  CHECK(roundTrip(m) == m);

  const std::vector<std::vector<std::vector<std::string>>> deep{{{"a", "b"}, {}}, {}, {{""}}};
  CHECK(roundTrip(deep) == deep);
}

TEST_CASE("an aggregate holding strings, containers and nested aggregates round-trips",
          "[codec][aggregate]") {
  const Team t = sampleTeam();
  CHECK(roundTrip(t) == t);

  Sixteen s{};
  s.f0 = 1;
  s.f14 = 14;
  s.f15 = "sixteenth";
  CHECK(roundTrip(s) == s);

  ThirtyTwo big{};
  big.s0 = "first";
  big.f16 = 16;
  big.f30 = 30;
  big.s31 = "last";
  CHECK(roundTrip(big) == big);
}

TEST_CASE("a recursive aggregate round-trips", "[codec][aggregate]") {
  TreeNode leaf{4, {}, {}};
  const TreeNode root{1, {TreeNode{2, {}, {}}, TreeNode{3, {leaf}, {}}}, {{"x", leaf}}};
  CHECK(roundTrip(root) == root);
}

TEST_CASE("an aggregate with a const member and no default constructor round-trips",
          "[codec][aggregate]") {
  const Labelled l{7, "seven"};
  CHECK(roundTrip(l) == l);
  const std::vector<Labelled> v{{1, "a"}, {2, "b"}};
  CHECK(roundTrip(v) == v);
}

TEST_CASE("an aggregate whose fields are all raw is encoded as its object bytes",
          "[codec][aggregate]") {
  const std::vector<Point> pts{{1, 2}, {3, 4}, {5, 6}};
  const auto bytes = flockmp::encode(pts);
  CHECK(bytes.size() == 8 + 3 * sizeof(Point));
  CHECK(std::memcmp(bytes.data() + 8, pts.data(), 3 * sizeof(Point)) == 0);
  CHECK(roundTrip(pts) == pts);
}

TEST_CASE("an aggregate that is not raw is encoded field by field", "[codec][aggregate]") {
  const Person p = samplePerson();
  // name (8 + 3) + age (4) + tags (8 + 8 + 4 + 8 + 7) + score (1 + 8)
  CHECK(flockmp::encode(p).size() == 11 + 4 + 35 + 9);
}

TEST_CASE("a member serialize hook round-trips, private ones through CodecAccess",
          "[codec][hook]") {
  const Account a{"owner", 1234};
  CHECK(roundTrip(a) == a);
  CHECK(flockmp::encode(a).size() == 8 + 5 + 8);
  const Secret s{{4, 5}};
  CHECK(roundTrip(s) == s);
}

TEST_CASE("an ADL serialize hook round-trips", "[codec][hook]") {
  const user::Reading r{"probe", -3.5};
  CHECK(roundTrip(r) == r);
  const std::vector<user::Reading> many{r, {"other", 1}};
  CHECK(roundTrip(many) == many);
}

TEST_CASE("a hook beats the built-in rule of a trivially copyable type", "[codec][hook]") {
  const Widened w{-42};
  const auto bytes = flockmp::encode(w);
  REQUIRE(bytes.size() == 1 + 8); // the hook's marker and int64, not the 4 object bytes
  CHECK(static_cast<std::uint8_t>(bytes[0]) == 0xAB);
  CHECK(flockmp::decode<Widened>(bytes) == w);

  auto bad = bytes;
  bad[0] = std::byte{0};
  CHECK(codecErrorOf([&] { (void)flockmp::decode<Widened>(bad); }).find("bad Widened marker") !=
        std::string::npos);
}

TEST_CASE("a Serializer specialization carries a type with no default constructor",
          "[codec][serializer]") {
  const Celsius c{21.5};
  CHECK(roundTrip(c) == c);
  CHECK(flockmp::encode(c).size() == sizeof(double));
  const std::optional<std::vector<Celsius>> v{{Celsius{1}, Celsius{2}}};
  CHECK(roundTrip(v) == v);
}

TEST_CASE("a Serializer specialization beats the built-in rule", "[codec][serializer]") {
  const Meters m{2.5};
  const auto bytes = flockmp::encode(m);
  CHECK(bytes.size() == 8 + std::to_string(2.5).size()); // text, not 8 object bytes
  CHECK(flockmp::decode<Meters>(bytes) == m);
}

TEST_CASE("a variant round-trips through each of its alternatives", "[codec][variant]") {
  using V = std::variant<std::monostate, int, std::string, Point, std::vector<double>, int>;
  const std::vector<V> values{V{},
                              V{std::in_place_index<1>, 5},
                              V{std::string("s")},
                              V{Point{1, 2}},
                              V{std::vector<double>{1.5}},
                              V{std::in_place_index<5>, 6}};
  for (const auto& v : values) {
    const V back = roundTrip(v);
    CHECK(back.index() == v.index());
    CHECK(back == v);
  }
}

TEST_CASE("a valueless variant is refused with a CodecError", "[codec][variant]") {
  std::variant<int, Thrower> v;
  CHECK_THROWS_AS(v.emplace<1>(1), std::runtime_error);
  REQUIRE(v.valueless_by_exception());
  CHECK_THROWS_AS(flockmp::encode(v), flockmp::CodecError);
}

TEST_CASE("containers of zero-size elements round-trip", "[codec][roundtrip]") {
  const std::vector<std::monostate> v(1000);
  const auto bytes = flockmp::encode(v);
  CHECK(bytes.size() == 8);
  CHECK(flockmp::decode<std::vector<std::monostate>>(bytes).size() == 1000);
  const std::list<std::tuple<>> l(3);
  CHECK(roundTrip(l).size() == 3);
}

TEST_CASE("zero-size elements cannot make a small input decode into unbounded memory",
          "[codec][corrupt]") {
  // 1000 inner vectors, each claiming 2^20 monostates: each count alone is plausible, together
  // they would be a billion elements from 8 KB of input.
  std::vector<std::byte> bytes;
  flockmp::ByteWriter w{bytes};
  w.writeRaw(std::uint64_t{1000});
  for (int i = 0; i < 1000; ++i) w.writeRaw(std::uint64_t{1} << 20);
  const std::string msg =
      codecErrorOf([&] { (void)flockmp::decode<std::vector<std::vector<std::monostate>>>(bytes); });
  CHECK(msg.find("std::vector<std::monostate>") != std::string::npos);

  // A legitimate large one still decodes.
  const std::vector<std::monostate> many(1'000'000);
  CHECK(roundTrip(many).size() == many.size());
}

TEST_CASE("a vector of a million elements round-trips as one block", "[codec][roundtrip]") {
  std::vector<std::int32_t> v(1'000'000);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::int32_t>(i * 2654435761u);
  const auto bytes = flockmp::encode(v);
  CHECK(bytes.size() == 8 + 4 * v.size());
  CHECK(flockmp::decode<std::vector<std::int32_t>>(bytes) == v);

  std::vector<std::string> s(100'000, "abc");
  CHECK(roundTrip(s) == s);
}

TEST_CASE("vectors and strings decode alike from aligned and misaligned bytes", "[codec][roundtrip]") {
  // Frames sit at any offset in the parent's read buffer: a vector of doubles is copied straight
  // from its bytes when they are aligned, and through a byte copy when they are not.
  std::vector<double> v(1000);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) * 0.25 - 3.0;
  const std::string str(3000, 'q');
  const std::u16string wide(700, u'\u00e9');
  for (std::size_t offset = 0; offset < 16; ++offset) {
    std::vector<std::byte> buf(offset);
    flockmp::ByteWriter w{buf};
    BinaryCodec::encode(w, v);
    BinaryCodec::encode(w, str);
    BinaryCodec::encode(w, wide);
    BinaryCodec::encode(w, std::vector<bool>{true, false, true});
    flockmp::ByteReader r{buf.data() + offset, buf.size() - offset};
    CHECK(BinaryCodec::decode<std::vector<double>>(r) == v);
    CHECK(BinaryCodec::decode<std::string>(r) == str);
    CHECK(BinaryCodec::decode<std::u16string>(r) == wide);
    CHECK(BinaryCodec::decode<std::vector<bool>>(r) == std::vector<bool>{true, false, true});
    CHECK(r.remaining() == 0);
  }
  // A count larger than the bytes left is still refused before anything is copied.
  auto bytes = flockmp::encode(std::string(10, 'x'));
  bytes.resize(bytes.size() - 1);
  CHECK_THAT(codecErrorOf([&] { (void)flockmp::decode<std::string>(bytes); }),
             flockmp::test::contains("remaining bytes"));
}

TEST_CASE("values can be appended one after another to a reused buffer", "[codec][bytes]") {
  std::vector<std::byte> buf;
  buf.reserve(64);
  for (int round = 0; round < 3; ++round) {
    buf.clear();
    flockmp::ByteWriter w{buf};
    BinaryCodec::encode(w, round);
    BinaryCodec::encode(w, std::string("x"));
    BinaryCodec::encode(w, Point{round, round});
    CHECK(w.size() == 4 + 9 + 8);

    flockmp::ByteReader r{buf};
    CHECK(BinaryCodec::decode<int>(r) == round);
    CHECK(BinaryCodec::decode<std::string>(r) == "x");
    CHECK(BinaryCodec::decode<Point>(r) == Point{round, round});
    CHECK(r.remaining() == 0);
    CHECK_NOTHROW(r.expectEnd());
  }
}

TEST_CASE("a custom codec is used through the codec parameter", "[codec][concept]") {
  const auto bytes = flockmp::encode<int, TextCodec>(-451);
  CHECK(bytes.size() == 4);
  CHECK(flockmp::decode<int, TextCodec>(bytes) == -451);
  CHECK_NOTHROW(flockmp::requireCodable<TextCodec, int>());
  CHECK_NOTHROW(flockmp::requireCodable<BinaryCodec, Team>());
}

// ---- the byte reader and writer ---------------------------------------------------------------

TEST_CASE("ByteReader checks every read against the end", "[codec][bytes]") {
  std::vector<std::byte> buf;
  flockmp::ByteWriter w{buf};
  w.writeRaw(std::uint32_t{7});
  w.write("ab", 2);
  REQUIRE(w.buffer().size() == 6);

  flockmp::ByteReader r{buf.data(), buf.size()};
  CHECK(r.readRaw<std::uint32_t>() == 7);
  CHECK(r.position() == buf.data() + 4);
  CHECK_THROWS_AS(r.expectEnd(), flockmp::CodecError);
  std::uint32_t x = 0;
  const std::string msg = codecErrorOf([&] { r.read(&x, 4); });
  CHECK(msg.find("truncated") != std::string::npos);
  CHECK(r.remaining() == 2); // a failed read consumes nothing
  char two[2];
  r.read(two, 2);
  CHECK(std::string(two, 2) == "ab");
  CHECK_NOTHROW(r.expectEnd());
  CHECK_THROWS_AS(r.readRaw<std::uint8_t>(), flockmp::CodecError);

  flockmp::ByteReader empty{nullptr, 0};
  CHECK_NOTHROW(empty.read(nullptr, 0));
  CHECK_THROWS_AS(empty.readRaw<bool>(), flockmp::CodecError);
}

TEST_CASE("decode errors name the type being decoded", "[codec][errors]") {
  auto bytes = flockmp::encode(std::vector<int>{1, 2, 3});
  bytes.pop_back();
  const std::string msg = codecErrorOf([&] { (void)flockmp::decode<std::vector<int>>(bytes); });
  CHECK(msg.find("std::vector<int") != std::string::npos);
  CHECK(msg.find("element count 3") != std::string::npos);

  auto pair = flockmp::encode(std::pair<int, double>{1, 2.5});
  pair.pop_back();
  const std::string p = codecErrorOf([&] { (void)flockmp::decode<std::pair<int, double>>(pair); });
  CHECK(p.find("std::pair<int, double>") != std::string::npos);
  CHECK(p.find("truncated") != std::string::npos);

  const std::string raw =
      codecErrorOf([] { (void)flockmp::decode<double>(std::span<const std::byte>{}); });
  CHECK(raw.find("double") != std::string::npos);

  const auto trailing = flockmp::encode(std::string("abc"));
  const std::string t = codecErrorOf(
      [&] { (void)flockmp::decode<std::string>(std::span(trailing).first(trailing.size())); });
  CHECK(t.empty());
  auto longer = trailing;
  longer.push_back(std::byte{0});
  const std::string l = codecErrorOf([&] { (void)flockmp::decode<std::string>(longer); });
  CHECK(l.find("std::string") != std::string::npos);
  CHECK(l.find("trailing") != std::string::npos);
}

TEST_CASE("typeName and demangle give readable names", "[codec][errors]") {
  CHECK(flockmp::detail::typeName<int>() == "int");
  CHECK(flockmp::detail::typeName<std::string>() == "std::string");
  CHECK(flockmp::detail::typeName<std::vector<std::string>>() == "std::vector<std::string>");
  CHECK(flockmp::detail::typeName<std::map<int, std::vector<std::string>>>() ==
        "std::map<int, std::vector<std::string>>");
  CHECK(flockmp::detail::typeName<std::unordered_set<std::u16string>>() ==
        "std::unordered_set<std::basic_string<char16_t>>");
  CHECK(flockmp::detail::demangle(typeid(std::runtime_error).name()) == "std::runtime_error");
  CHECK(flockmp::detail::demangle("not a mangled name") == "not a mangled name");
  CHECK(flockmp::detail::demangle(nullptr).empty());
}

// ---- corrupt input ---------------------------------------------------------------------------

TEST_CASE("an invalid bool byte is a CodecError, also inside raw aggregates and arrays",
          "[codec][corrupt]") {
  auto b = flockmp::encode(true);
  b[0] = std::byte{2};
  CHECK_THROWS_AS(flockmp::decode<bool>(b), flockmp::CodecError);

  auto f = flockmp::encode(Flagged{1, true});
  f[offsetof(Flagged, on)] = std::byte{0x7F};
  CHECK_THROWS_AS(flockmp::decode<Flagged>(f), flockmp::CodecError);

  auto vf = flockmp::encode(std::vector<Flagged>{{1, false}, {2, true}});
  vf[8 + sizeof(Flagged) + offsetof(Flagged, on)] = std::byte{3};
  CHECK_THROWS_AS(flockmp::decode<std::vector<Flagged>>(vf), flockmp::CodecError);

  auto a = flockmp::encode(std::array<bool, 3>{true, false, true});
  a[1] = std::byte{9};
  CHECK_THROWS_AS((flockmp::decode<std::array<bool, 3>>(a)), flockmp::CodecError);

  auto vb = flockmp::encode(std::vector<bool>{true, false});
  vb[9] = std::byte{2};
  CHECK_THROWS_AS(flockmp::decode<std::vector<bool>>(vb), flockmp::CodecError);
}

TEST_CASE("an invalid variant index or optional flag is a CodecError", "[codec][corrupt]") {
  using V = std::variant<int, std::string>;
  auto v = flockmp::encode(V{5});
  v[0] = std::byte{2};
  const std::string msg = codecErrorOf([&] { (void)flockmp::decode<V>(v); });
  CHECK(msg.find("index 2") != std::string::npos);

  auto o = flockmp::encode(std::optional<int>{3});
  o[0] = std::byte{2};
  CHECK_THROWS_AS(flockmp::decode<std::optional<int>>(o), flockmp::CodecError);
}

TEMPLATE_TEST_CASE("a huge element count is refused before anything is allocated",
                   "[codec][corrupt]", std::string, std::u32string, std::vector<int>,
                   std::vector<std::string>, std::vector<bool>, std::vector<std::monostate>,
                   std::vector<std::tuple<>>, std::vector<Empty>, std::deque<int>,
                   std::list<std::tuple<>>, std::forward_list<std::monostate>, StringMap, UMap,
                   std::set<std::string>, std::unordered_set<int>, std::vector<Account>,
                   std::vector<Person>) {
  for (const std::uint64_t count :
       {std::uint64_t{1} << 60, ~std::uint64_t{0}, std::uint64_t{1} << 40, std::uint64_t{1} << 32,
        std::uint64_t{5'000'000}}) {
    const auto bytes = bytesOfCount(count);
    const std::string msg = codecErrorOf([&] { (void)flockmp::decode<TestType>(bytes); });
    CHECK_FALSE(msg.empty());
  }
}

namespace {

// Decodes bytes as T; "" when that returned a value or threw flockmp::CodecError, else what went
// wrong (another exception type).
template <class T>
std::string decodeOutcome(std::span<const std::byte> bytes) {
  try {
    (void)flockmp::decode<T>(bytes);
  } catch (const flockmp::CodecError&) {
  } catch (const std::exception& e) {
    return flockmp::detail::demangle(typeid(e).name()) + ": " + e.what();
  } catch (...) {
    return "a non-std exception";
  }
  return {};
}

template <class T>
void fuzzDecoding(const T& value, std::uint32_t seed) {
  std::mt19937 rng{seed};
  const std::vector<std::byte> good = flockmp::encode(value);
  REQUIRE(flockmp::decode<T>(good) == value);
  auto byte = [&] { return static_cast<std::byte>(rng() & 0xFF); };
  std::vector<std::string> problems;
  auto check = [&](std::span<const std::byte> bytes, const char* what) {
    if (auto p = decodeOutcome<T>(bytes); !p.empty())
      problems.push_back(std::string(what) + ": " + p);
  };

  // Every strict prefix: the encoding is self-delimiting, so each one is truncated.
  for (std::size_t n = 0; n < good.size(); ++n) {
    const std::string msg =
        codecErrorOf([&] { (void)flockmp::decode<T>(std::span(good).first(n)); });
    if (msg.empty()) problems.push_back(fmt::format("prefix of {} bytes decoded", n));
  }
  for (int i = 0; i < 1500; ++i) {
    auto bytes = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips && !bytes.empty(); ++f) bytes[rng() % bytes.size()] = byte();
    check(bytes, "flipped");
  }
  for (int i = 0; i < 500; ++i) {
    auto bytes = good;
    const auto at = static_cast<std::ptrdiff_t>(rng() % (bytes.size() + 1));
    const std::size_t n = 1 + rng() % 8;
    std::vector<std::byte> extra(n);
    for (auto& b : extra) b = byte();
    bytes.insert(bytes.begin() + at, extra.begin(), extra.end());
    check(bytes, "inserted");
  }
  for (int i = 0; i < 500; ++i) {
    std::vector<std::byte> bytes(rng() % 64);
    for (auto& b : bytes) b = byte();
    check(bytes, "garbage");
  }
  // A huge count planted at every offset.
  for (std::size_t at = 0; at + 8 <= good.size(); ++at) {
    auto bytes = good;
    const std::uint64_t huge = std::uint64_t{1} << 60;
    std::memcpy(bytes.data() + at, &huge, 8);
    check(bytes, "huge count");
  }
  INFO(problems.size() << " problems; first: " << (problems.empty() ? "" : problems.front()));
  CHECK(problems.empty());
}

struct Inner {
  std::string name;
  std::vector<std::optional<int>> values;
  bool operator==(const Inner&) const = default;
};
struct Outer {
  std::map<std::string, Inner> byName;
  std::variant<std::monostate, Inner, std::vector<Flagged>> extra;
  std::array<bool, 2> flags{};
  bool operator==(const Outer&) const = default;
};

} // namespace

TEST_CASE("corrupt encodings decode to a value or throw CodecError, never worse",
          "[codec][corrupt][fuzz]") {
  SECTION("std::string") { fuzzDecoding(std::string("the quick brown fox"), 1); }
  SECTION("std::vector<std::string>") {
    fuzzDecoding(std::vector<std::string>{"a", "bb", "", "dddd"}, 2);
  }
  SECTION("std::map<int, std::string>") {
    fuzzDecoding(std::map<int, std::string>{{1, "x"}, {5, "yy"}}, 3);
  }
  SECTION("std::variant") {
    fuzzDecoding(std::variant<int, std::string, std::vector<double>>{std::vector<double>{1, 2}}, 4);
  }
  SECTION("std::optional") { fuzzDecoding(std::optional<std::vector<int>>{{1, 2, 3}}, 5); }
  SECTION("a nested aggregate") {
    Outer o;
    o.byName["k"] = Inner{"n", {1, std::nullopt}};
    o.extra = std::vector<Flagged>{{1, true}, {2, false}};
    o.flags = {true, false};
    fuzzDecoding(o, 6);
  }
  SECTION("a recursive aggregate") {
    TreeNode leaf{4, {}, {}};
    fuzzDecoding(TreeNode{1, {leaf, TreeNode{3, {leaf}, {}}}, {{"x", leaf}}}, 12);
  }
  SECTION("containers of zero-size elements") {
    fuzzDecoding(std::vector<std::vector<std::monostate>>{std::vector<std::monostate>(3), {}}, 7);
  }
  SECTION("hooked and specialized types") {
    fuzzDecoding(std::vector<Account>{{"a", 1}, {"b", 2}}, 8);
    fuzzDecoding(std::list<Meters>{{1.0}, {2.0}}, 9);
    fuzzDecoding(std::set<std::string>{"a", "b"}, 10);
    fuzzDecoding(std::unordered_map<int, std::vector<bool>>{{1, {true}}, {2, {}}}, 11);
  }
}
